//! ApiVersions, with Kafka's fallback for versions it does not know
//! (KIP-511): a v0 answer with UNSUPPORTED_VERSION and the supported ranges.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};

use super::{Call, supported};
use crate::response::{Reply, encode};

pub fn handle(c: &Call, _req: ApiVersionsRequest) -> Reply {
    c.reply(ApiKey::ApiVersions, &response(0))
}

pub fn unsupported_version(correlation_id: i32) -> Reply {
    Reply::Ready(encode(ApiKey::ApiVersions, 0, correlation_id, &response(ResponseError::UnsupportedVersion.code())))
}

fn response(error_code: i16) -> ApiVersionsResponse {
    let api_keys = supported()
        .iter()
        .map(|(k, v)| ApiVersion::default().with_api_key(*k as i16).with_min_version(v.min).with_max_version(v.max))
        .collect();
    ApiVersionsResponse::default().with_error_code(error_code).with_api_keys(api_keys)
}
