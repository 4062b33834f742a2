//! Compiles the .proto files with the vendored protoc, so a build needs nothing installed.

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
            ],
            &["proto"],
        )?;
    Ok(())
}
