//! Python's http.server, the second plain HTTP origin, really serves a directory and stops.

use std::fs;
use std::net::TcpStream;

use mast_test_support::HttpServer;
use mast_test_support::http::get;

#[test]
fn serves_a_file_and_404s_a_missing_one() {
    if !HttpServer::available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("targets")).unwrap();
    fs::write(root.path().join("targets/bundle.tar.gz"), b"\x1f\x8b bytes").unwrap();
    let server = HttpServer::python(root.path());

    let found = get(&server.url("targets/bundle.tar.gz")).unwrap();
    assert_eq!(found.status, 200);
    assert_eq!(found.body, b"\x1f\x8b bytes");
    assert!(
        found
            .header("Server")
            .is_some_and(|server| server.contains("SimpleHTTP"))
    );

    assert_eq!(get(&server.url("targets/other")).unwrap().status, 404);
    let log = fs::read_to_string(server.log()).unwrap();
    assert!(
        log.contains("\"GET /targets/bundle.tar.gz HTTP/1.1\" 200"),
        "{log}"
    );
}

#[test]
fn binds_loopback_only_and_stops_when_dropped() {
    if !HttpServer::available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let server = HttpServer::python(root.path());
    let port = server.port();
    let pid = server.pid();
    assert_eq!(server.base_url(), format!("http://127.0.0.1:{port}"));
    let cmdline = fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.contains("127.0.0.1"), "{cmdline:?}");

    drop(server);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still open"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} still alive"
    );
}
