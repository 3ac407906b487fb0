//! Compiles `proto/faultline/v1/*.proto` with protox (a pure-Rust protobuf
//! compiler), so building faultline never needs a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/faultline/v1/faultline.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // `AgentLink.Connect` would clash with the generated `connect(dst)`
        // constructor; callers build a Channel and use `new(channel)` instead.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
