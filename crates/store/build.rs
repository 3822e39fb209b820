//! Compiles `proto/etcd.proto` (the part of etcd's v3 API the store speaks)
//! with protox, a protobuf compiler written in Rust, so that building
//! skiff needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/etcd.proto");
    let fds = protox::compile(["etcd.proto"], ["proto"])?;
    tonic_prost_build::configure().build_server(false).compile_fds(fds)?;
    Ok(())
}
