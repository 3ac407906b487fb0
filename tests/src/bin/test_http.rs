//! `faultline-test-http`: a real HTTP server process for end-to-end tests.
//! Binds `--listen ADDR` (by default a free port on 127.0.0.1), prints the
//! port on stdout, and answers every request with `200 ok`. Tests kill it to
//! see a probe fail. `--tag X` only makes the command line unique so a test
//! can select exactly this process.

use std::io::{Read, Write};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .unwrap_or("127.0.0.1:0");
    let listener = match std::net::TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("faultline-test-http: cannot bind {listen}: {e}");
            std::process::exit(1);
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    println!("{port}");
    let _ = std::io::stdout().flush();
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { continue };
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
        });
    }
}
