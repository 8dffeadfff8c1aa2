// The fw language client: starts `fwc lsp` (the `fwc.path` setting names the binary) for
// `.fw` files; everything else (diagnostics, hover, definitions, references, symbols,
// completion, formatting) comes from the server.
"use strict";
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const command = vscode.workspace.getConfiguration("fwc").get("path") || "fwc";
  const server = { command, args: ["lsp"] };
  client = new LanguageClient(
    "fwc",
    "fwc",
    { run: server, debug: server },
    { documentSelector: [{ scheme: "file", language: "fw" }] }
  );
  context.subscriptions.push({ dispose: () => client && client.stop() });
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
