//! Compiles `proto/etcd.proto` (the part of etcd's v3 API the charm sends over gRPC) into a
//! file descriptor set that `rpc.rs` embeds: protox is a protobuf compiler in Rust, so the
//! build needs no protoc.

fn main() {
    println!("cargo:rerun-if-changed=proto/etcd.proto");
    let set = match protox::compile(["etcd.proto"], ["proto"]) {
        Ok(set) => set,
        Err(e) => {
            eprintln!("proto/etcd.proto: {e}");
            std::process::exit(1);
        }
    };
    let out = std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into());
    let path = std::path::Path::new(&out).join("etcd.bin");
    if let Err(e) = std::fs::write(&path, prost::Message::encode_to_vec(&set)) {
        eprintln!("writing {}: {e}", path.display());
        std::process::exit(1);
    }
}
