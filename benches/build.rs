//! Compiles the bench protos (the echo floor and a light view of GetFeaturesResponse)
//! with the vendored protoc, like `fstore-proto` does.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // `bytes` fields as `Bytes`: the echo answers a shared buffer, no copy per call.
    config.bytes(["."]);
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/fstore/bench/v1/echo.proto"],
        &["proto"],
    )?;
    Ok(())
}
