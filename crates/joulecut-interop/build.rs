//! Compiles the ONNX schema (`proto/onnx.proto`, from onnx 1.23.2) into prost types. protox parses
//! the schema in Rust, so building needs no `protoc`.

fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["onnx.proto"], ["proto"]).expect("proto/onnx.proto parses");
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("prost generates the ONNX types");
}
