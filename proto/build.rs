//! Compiles the .proto files with the vendored protoc, so a build needs nothing installed,
//! and generates the proto3 JSON mapping of the public API (pbjson).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("fstore_descriptor.bin"))
        .compile_with_config(
            config,
            &[
                "proto/featurestore/v1/featurestore.proto",
                "proto/fstore/wire/v1/wire.proto",
                "proto/fstore/sidecar/v1/sidecar.proto",
            ],
            &["proto"],
        )?;
    // serde impls of the public API that follow the proto3 JSON mapping (camelCase
    // names, enums by name, 64-bit integers as strings): the HTTP/JSON API's bodies.
    let descriptors = std::fs::read(out.join("fstore_descriptor.bin"))?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .build(&[".featurestore.v1"])?;
    Ok(())
}
