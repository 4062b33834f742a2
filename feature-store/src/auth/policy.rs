//! The role each RPC of `featurestore.v1.FeatureStore` needs: one table, default deny.
//! An RPC missing from [`required`] is refused to everyone, and a test walks the
//! service descriptor so a new RPC cannot ship without its row. The services every
//! caller may use without a key (health, reflection) are [`OPEN`].

use super::Role;

/// The gRPC path prefix of the feature store service.
pub const SERVICE_PATH: &str = "/featurestore.v1.FeatureStore/";

/// Services answered without a credential: load balancers probe health, reflection
/// and the OpenAPI document describe the API, and the operator page is a page (no
/// data: it calls the API with the key entered in it).
pub const OPEN: [&str; 5] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/openapi.json",
    "/ui",
];

/// The role method `method` (the name after the service path) needs; None: refused.
pub fn required(method: &str) -> Option<Role> {
    use Role::{Admin, Read, Write};
    Some(match method {
        "GetFeatures" | "GetTicket" | "WatchFeatures" | "CancelTicket" => Read,
        "SubscribeEvents" | "ReadLog" => Read,
        "ListFeatures" | "DescribeFeature" | "ListFlows" => Read,
        "GetBackfill" | "ListBackfills" | "GetPublishStatus" | "ListSchedules" => Read,
        "RegisterFeature" | "RegisterFeatures" | "PutInputs" | "Invalidate" => Write,
        "StartBackfill" | "CancelBackfill" | "Rollback" | "DeleteSchedule" => Write,
        "ListDeadLetters" | "ReplayDeadLetter" | "PurgeDeadLetters" => Admin,
        "CreateApiKey" | "ListApiKeys" | "RevokeApiKey" => Admin,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Every method of the service as the descriptor declares it.
    fn methods() -> Vec<String> {
        let set = prost_types::FileDescriptorSet::decode(fstore_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        set.file
            .iter()
            .filter(|f| f.package() == "featurestore.v1")
            .flat_map(|f| f.service.iter())
            .filter(|s| s.name() == "FeatureStore")
            .flat_map(|s| s.method.iter().map(|m| m.name().to_string()))
            .collect()
    }

    #[test]
    fn every_rpc_of_the_service_has_a_role() {
        let methods = methods();
        assert!(methods.len() >= 27, "the descriptor lists {methods:?}");
        let missing: Vec<_> = methods.iter().filter(|m| required(m).is_none()).collect();
        assert!(
            missing.is_empty(),
            "RPCs without a role (refused to all): {missing:?}"
        );
        assert_eq!(required("NoSuchCall"), None, "what is not listed is denied");
    }
}
