//! Opening the KV buckets the cluster keeps its coordination state in.

use async_nats::jetstream::{self, kv, stream};
use std::time::Duration;

/// Opening a KV bucket failed; names the bucket and the step.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error("creating bucket {bucket}: {source}")]
    Create { bucket: String, source: jetstream::context::CreateStreamError },
    #[error("opening bucket {bucket}: {source}")]
    Open { bucket: String, source: jetstream::context::KeyValueError },
    #[error("opening bucket {bucket}: timed out")]
    TimedOut { bucket: String },
}

/// Opens bucket `config.bucket` (its name, history, max_age and replicas
/// are used), creating it when it does not exist yet; bounded by `limit`.
/// An existing bucket is used as it is: callers check what they depend on.
pub(crate) async fn open(
    js: &jetstream::Context,
    config: kv::Config,
    limit: Duration,
) -> Result<kv::Store, BucketError> {
    let name = config.bucket.clone();
    let attempt = async {
        if let Ok(store) = js.get_key_value(&name).await {
            return Ok(store);
        }
        // Several replicas may race here; the server accepts an identical create.
        js.create_stream(stream_config(&config))
            .await
            .map_err(|source| BucketError::Create { bucket: name.clone(), source })?;
        js.get_key_value(&name).await.map_err(|source| BucketError::Open { bucket: name.clone(), source })
    };
    tokio::time::timeout(limit, attempt).await.map_err(|_| BucketError::TimedOut { bucket: name.clone() })?
}

/// The stream behind a KV bucket, as the KV convention lays it out. Made by
/// hand because async-nats' `create_key_value` first reads the account
/// info, which it cannot parse from a 2.9 server (no `reserved_memory`).
fn stream_config(config: &kv::Config) -> stream::Config {
    stream::Config {
        name: format!("KV_{}", config.bucket),
        subjects: vec![format!("$KV.{}.>", config.bucket)],
        max_messages_per_subject: config.history.max(1),
        max_age: config.max_age,
        num_replicas: config.num_replicas.max(1),
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        // Reads go to the stream leader: a direct get is answered by any
        // replica, and one that is paused swallows its share of them.
        allow_direct: false,
        ..Default::default()
    }
}
