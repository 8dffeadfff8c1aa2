// The TextMate grammar, as VS Code's own tokenizer (vscode-textmate + oniguruma) reads it:
// a sample program gets the scopes an editor theme colours.
"use strict";
const fs = require("fs");
const path = require("path");
const assert = require("assert");
const vsctm = require("vscode-textmate");
const oniguruma = require("vscode-oniguruma");

const wasm = fs.readFileSync(
  path.join(path.dirname(require.resolve("vscode-oniguruma")), "onig.wasm")
).buffer;

async function main() {
  await oniguruma.loadWASM(wasm);
  const registry = new vsctm.Registry({
    onigLib: Promise.resolve({
      createOnigScanner: (s) => new oniguruma.OnigScanner(s),
      createOnigString: (s) => new oniguruma.OnigString(s),
    }),
    loadGrammar: async () =>
      vsctm.parseRawGrammar(
        fs.readFileSync(path.join(__dirname, "..", "syntaxes", "fw.tmLanguage.json"), "utf8"),
        "fw.tmLanguage.json"
      ),
  });
  const grammar = await registry.loadGrammar("source.fw");
  const lines = [
    'define web = { 80, 443 };   # the web',
    "chain ssh-from(allowed: set<ip>) {",
    "    ip saddr $allowed tcp dport 22 accept;",
    '    log prefix "ssh: ";',
    "    ip daddr 10.0.0.0/8 drop;",
    "}",
  ];
  const scopes = {};
  let state = vsctm.INITIAL;
  for (const line of lines) {
    const r = grammar.tokenizeLine(line, state);
    for (const t of r.tokens) {
      const text = line.slice(t.startIndex, t.endIndex);
      scopes[text.trim()] = t.scopes[t.scopes.length - 1];
    }
    state = r.ruleStack;
  }
  const want = {
    define: "keyword.declaration.fw",
    chain: "keyword.declaration.fw",
    "ssh-from": "entity.name.function.fw",
    "# the web": "comment.line.number-sign.fw",
    $allowed: "variable.other.fw",
    accept: "keyword.control.fw",
    drop: "keyword.control.fw",
    dport: "keyword.other.fw",
    "22": "constant.numeric.fw",
    "10.0.0.0/8": "constant.numeric.address.fw",
    "ssh:": "string.quoted.double.fw",
  };
  for (const [text, scope] of Object.entries(want)) {
    assert.strictEqual(scopes[text], scope, `${text}: ${JSON.stringify(scopes)}`);
  }
  console.log(`grammar: ${Object.keys(want).length} tokens scoped as expected`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
