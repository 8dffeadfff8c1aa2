//! `fwc lsp` driven by a scripted client, as an editor drives it: JSON-RPC over the
//! server's standard input and output.

#[path = "support/lsp_client.rs"]
mod lsp_client;

use lsp_client::Client;
use serde_json::{json, Value};

fn doc(uri: &str, line: u32, character: u32) -> Value {
    json!({"textDocument": {"uri": uri}, "position": {"line": line, "character": character}})
}

#[test]
fn an_editor_session() {
    let dir = std::env::temp_dir().join(format!("fwc-lsp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = std::fs::canonicalize(&dir).unwrap();
    std::fs::write(dir.join("lib.fw"), "define web = { 80, 443 };\n").unwrap();
    let main_path = dir.join("main.fw");
    let lib_path = dir.join("lib.fw");
    std::fs::write(&main_path, "").unwrap();
    let uri = format!("file://{}", main_path.display());
    let lib_uri = format!("file://{}", lib_path.display());

    let mut c = Client::start();
    let init = c.request(
        "initialize",
        json!({"processId": null, "rootUri": null, "capabilities": {}}),
    );
    let caps = &init["capabilities"];
    for cap in [
        "hoverProvider",
        "definitionProvider",
        "referencesProvider",
        "documentSymbolProvider",
        "documentFormattingProvider",
    ] {
        assert_eq!(caps[cap], true, "{cap}: {init}");
    }
    c.notify("initialized", json!({}));

    // an error on open
    let broken = "table filter { chain input policy drop { tcp dport $webb accept; } }\n";
    c.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": "fw", "version": 1, "text": broken}}),
    );
    let d = c.diagnostics(&uri);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["code"], "FW0020");
    assert_eq!(d[0]["severity"], 1);
    assert_eq!(d[0]["range"]["start"], json!({"line": 0, "character": 51}));

    // fixed by a change; the define comes from an include
    let text = "include \"lib.fw\";
chain ssh-from(allowed: set<ip>) {
    ip saddr $allowed tcp dport 22 accept;
}
table filter {
    chain input policy drop {
        tcp dport $web accept;
        jump ssh-from({ 10.0.0.1 });
    }
}
";
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": text}]}),
    );
    assert_eq!(c.diagnostics(&uri), Vec::<Value>::new());

    // hover: the define's type and value; a chain's signature
    let h = c.request("textDocument/hover", doc(&uri, 6, 20));
    let v = h["contents"]["value"].as_str().unwrap();
    assert!(v.contains("define web: set<int>"), "{v}");
    assert!(v.contains("80") && v.contains("443"), "{v}");
    let h = c.request("textDocument/hover", doc(&uri, 7, 16));
    assert!(
        h["contents"]["value"]
            .as_str()
            .unwrap()
            .contains("chain ssh-from(allowed: set<ip>)"),
        "{h}"
    );

    // go to definition: into the included file
    let def = c.request("textDocument/definition", doc(&uri, 6, 20));
    assert_eq!(def["uri"], lib_uri);
    assert_eq!(def["range"]["start"], json!({"line": 0, "character": 7}));
    let def = c.request("textDocument/definition", doc(&uri, 7, 16));
    assert_eq!(def["uri"], uri);
    assert_eq!(def["range"]["start"], json!({"line": 1, "character": 6}));

    // references: the use and the declaration
    let refs = c.request(
        "textDocument/references",
        json!({"textDocument": {"uri": uri}, "position": {"line": 6, "character": 20},
               "context": {"includeDeclaration": true}}),
    );
    let refs = refs.as_array().unwrap();
    assert_eq!(refs.len(), 2, "{refs:?}");
    assert!(refs.iter().any(|r| r["uri"] == lib_uri));

    // symbols
    let syms = c.request(
        "textDocument/documentSymbol",
        json!({"textDocument": {"uri": uri}}),
    );
    let names: Vec<&str> = syms
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["include \"lib.fw\"", "ssh-from", "table filter"]);
    assert_eq!(syms[2]["children"][0]["name"], "input");

    // completion: after `$`, the defines in scope; elsewhere also chains and keywords
    let labels = |items: Value| -> Vec<String> {
        items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["label"].as_str().unwrap().to_string())
            .collect()
    };
    let after_dollar = labels(c.request("textDocument/completion", doc(&uri, 6, 19)));
    assert_eq!(after_dollar, ["$web"]);
    let anywhere = labels(c.request("textDocument/completion", doc(&uri, 7, 8)));
    for want in ["$web", "ssh-from", "accept", "jump"] {
        assert!(anywhere.iter().any(|l| l == want), "{want}: {anywhere:?}");
    }

    // formatting: one edit, the canonical layout
    let edits = c.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": uri}, "options": {"tabSize": 4, "insertSpaces": true}}),
    );
    assert_eq!(edits, json!([]), "already formatted");

    // the included file changes: the file that includes it is checked again
    c.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": lib_uri, "languageId": "fw", "version": 1,
               "text": "define web = { 80, 443 };\n"}}),
    );
    // alone, the library only gets a warning: nothing here uses its define
    let d = c.diagnostics(&lib_uri);
    assert!(d.iter().all(|d| d["code"] == "FW0105"), "{d:?}");
    // opening it re-checks main.fw too (it now reads the editor's text of lib.fw)
    assert_eq!(c.diagnostics(&uri), Vec::<Value>::new());
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": lib_uri, "version": 2},
               "contentChanges": [{"text": "define web = { 80, 99999 };\n"}]}),
    );
    // lib.fw is checked, and main.fw, which includes it, again: the out-of-range port is
    // an error where `$web` is used as a port
    let mut main_diags = None;
    for _ in 0..6 {
        let m = c.next();
        if m["method"] == "textDocument/publishDiagnostics" && m["params"]["uri"] == uri {
            main_diags = Some(m["params"]["diagnostics"].clone());
            break;
        }
    }
    let main_diags = main_diags.expect("main.fw is checked again");
    let codes: Vec<&str> = main_diags
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    assert!(
        main_diags
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["severity"] == 1),
        "{main_diags}"
    );
    assert!(codes.iter().any(|c| c.starts_with("FW003")), "{codes:?}");

    let r = c.request("shutdown", json!(null));
    assert_eq!(r, Value::Null);
    c.notify("exit", json!(null));
    let st = c.child.wait().unwrap();
    assert!(st.success());
}
