//! Compiles the project's own `.proto` files with protox (pure Rust, so no system `protoc` is
//! needed on a fresh machine) and tonic-prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/tracecov/store/v1/store.proto",
        "proto/tracecov/demo/v1/shop.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
