//! Compiles `proto/cri.proto` with protox, a protobuf compiler written in
//! Rust, so that building skiff needs no system `protoc` (the `k8s-cri` and
//! `containerd-client` crates both run `protoc` from their build scripts).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/cri.proto");
    let fds = protox::compile(["cri.proto"], ["proto"])?;
    tonic_prost_build::configure().build_server(false).compile_fds(fds)?;
    Ok(())
}
