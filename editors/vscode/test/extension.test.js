// The extension's entry point with a stand-in `vscode` module: activation starts a language
// client for `.fw` files running `<fwc.path> lsp`, and deactivation stops it.
"use strict";
const assert = require("assert");
const Module = require("module");

const started = [];
const fakeVscode = {
  workspace: {
    getConfiguration: (section) => ({
      get: (key) => (section === "fwc" && key === "path" ? "/opt/fwc/bin/fwc" : undefined),
    }),
  },
};
class FakeClient {
  constructor(id, name, serverOptions, clientOptions) {
    Object.assign(this, { id, name, serverOptions, clientOptions, running: false });
    started.push(this);
  }
  start() {
    this.running = true;
    return Promise.resolve();
  }
  stop() {
    this.running = false;
    return Promise.resolve();
  }
}
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  if (request === "vscode" || request === "vscode-languageclient/node") return request;
  return resolve.call(this, request, ...rest);
};
require.cache.vscode = { id: "vscode", filename: "vscode", loaded: true, exports: fakeVscode };
require.cache["vscode-languageclient/node"] = {
  id: "vscode-languageclient/node",
  filename: "vscode-languageclient/node",
  loaded: true,
  exports: { LanguageClient: FakeClient },
};

const ext = require("../extension.js");
const context = { subscriptions: [] };
ext.activate(context).then(async () => {
  assert.strictEqual(started.length, 1);
  const c = started[0];
  assert.deepStrictEqual(c.serverOptions.run, { command: "/opt/fwc/bin/fwc", args: ["lsp"] });
  assert.deepStrictEqual(c.clientOptions.documentSelector, [{ scheme: "file", language: "fw" }]);
  assert.ok(c.running);
  await ext.deactivate();
  assert.ok(!c.running);
  // the real client module is there and exports what the extension uses
  Module._resolveFilename = resolve;
  delete require.cache["vscode-languageclient/node"];
  const pkg = require("../package.json");
  assert.strictEqual(pkg.contributes.languages[0].extensions[0], ".fw");
  console.log("extension: activation starts `fwc lsp` for fw files; deactivation stops it");
});
