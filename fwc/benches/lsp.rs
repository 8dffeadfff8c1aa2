//! How fast `fwc lsp` answers a change: `cargo bench -p fwc --bench lsp`.
//!
//! A generated program of 1,000 rules (ClassBench-shaped, the `fw` style) is opened, then
//! changed 30 times (a rule's port edited, so that every change is a new program); the time
//! from sending `textDocument/didChange` to receiving the document's
//! `textDocument/publishDiagnostics` is one answer. Prints the median and the slowest.

#[path = "../tests/support/lsp_client.rs"]
mod lsp_client;

use serde_json::json;
use std::time::Instant;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let src = fwc_compiler::gen::ruleset(fwc_compiler::gen::Style::Fw, 1000, 42);
    let dir = std::env::temp_dir().join(format!("fwc-lsp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fw_1000.fw");
    std::fs::write(&path, &src).unwrap();
    let uri = format!("file://{}", std::fs::canonicalize(&path).unwrap().display());
    let mut c = lsp_client::Client::start();
    c.request(
        "initialize",
        json!({"processId": null, "rootUri": null, "capabilities": {}}),
    );
    c.notify("initialized", json!({}));
    c.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": "fw", "version": 1, "text": src}}),
    );
    c.diagnostics(&uri);
    let mut times = Vec::new();
    for k in 0..30u32 {
        // a different port in one rule each time
        let text = src.replacen("dport 80 ", &format!("dport {} ", 1000 + k), 1);
        let t = Instant::now();
        c.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": uri, "version": k + 2},
                   "contentChanges": [{"text": text}]}),
        );
        c.diagnostics(&uri);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    c.request("shutdown", json!(null));
    c.notify("exit", json!(null));
    let _ = c.child.wait();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "fwc lsp, a change to a 1,000-rule program answered (diagnostics published): median {:.1} ms, slowest {:.1} ms over {} changes (target < 200 ms)",
        times[times.len() / 2],
        times[times.len() - 1],
        times.len()
    );
}
