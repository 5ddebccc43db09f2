//! Hostile clients (issue 20) at a bounded size: each test reproduces one attack against
//! the real binary and asserts the bound it must respect.

use std::net::TcpStream;
use std::process::Command;

use crate::ops::metrics_addr;
use crate::util::{Proc, TIMEOUT};

/// A scrape with `curl`, bounded by [`TIMEOUT`]: (exit code, body).
fn curl_metrics(addr: &str) -> (Option<i32>, String) {
    let output = Command::new("curl")
        .args(["-s", "--max-time", &TIMEOUT.as_secs().to_string()])
        .arg(format!("http://{addr}/metrics"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl: {e}"));
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

// Issue 20, item 6: idle connections to /metrics must not lock scrapers out.
#[test]
fn fifty_idle_metrics_connections_do_not_starve_a_scraper() {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--metrics", "127.0.0.1:0"]);
    server.listening();
    let metrics = metrics_addr(&server);
    let idle: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(&metrics).unwrap_or_else(|e| panic!("connect {metrics}: {e}")))
        .collect();
    for _ in 0..3 {
        let (code, body) = curl_metrics(&metrics);
        assert_eq!(code, Some(0), "curl failed\n{}", server.report());
        assert!(
            body.contains("sockit_connections_accepted_total"),
            "no metrics in the answer: {body:?}\n{}",
            server.report()
        );
    }
    drop(idle);
}
