//! etcd's gRPC API (tonic over rustls, this unit's client certificate) for what the JSON
//! gateway does badly: the snapshot stream, whose chunks the gateway base64-codes inside one
//! JSON document each. The two messages of `Maintenance.Snapshot` are declared here with
//! prost's derive from etcd's `rpc.proto` (field numbers as there), so the build needs no
//! protoc and no generated code for the hundred messages the charm never sends.

use crate::client::Tls;
use anyhow::{anyhow, Context as _, Result};
use std::time::Duration;

#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int64, tag = "3")]
    pub revision: i64,
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// bytes still to come after this chunk (the db, then its 32-byte sha256)
    #[prost(uint64, tag = "2")]
    pub remaining_bytes: u64,
    #[prost(bytes = "bytes", tag = "3")]
    pub blob: prost::bytes::Bytes,
    #[prost(string, tag = "4")]
    pub version: String,
}

const SNAPSHOT: &str = "/etcdserverpb.Maintenance/Snapshot";

/// Reads `Maintenance.Snapshot` from `ep` (`https://host:port`) and hands each chunk to
/// `chunk` with the bytes that remain after it. A failure of the stream (a gRPC status, a
/// dropped connection) is an error; a stream that ends early is the caller's to notice
/// (the trailing digest).
pub fn snapshot(
    tls: &Tls,
    token: Option<&str>,
    ep: &str,
    mut chunk: impl FnMut(&[u8], u64) -> std::io::Result<()>,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the gRPC client's runtime")?;
    rt.block_on(async {
        let config = tls_config(tls);
        let channel = tonic::transport::Endpoint::from_shared(ep.to_string())
            .map_err(|e| anyhow!("{ep} is not an endpoint URL: {e}"))?
            .tls_config(config)
            .map_err(|e| anyhow!("TLS for {ep}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            // Flow-control windows large enough that etcd never waits for this reader's
            // window updates between its 32 KiB chunks.
            .initial_stream_window_size(Some(8 << 20))
            .initial_connection_window_size(Some(16 << 20))
            .connect()
            .await
            .map_err(|e| anyhow!("connecting to {ep} (gRPC): {}", chain(&e)))?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| anyhow!("gRPC to {ep}: {}", chain(&e)))?;
        let codec = tonic::codec::ProstCodec::<SnapshotRequest, SnapshotResponse>::default();
        let mut request = tonic::Request::new(SnapshotRequest {});
        if let Some(t) = token {
            set_token(&mut request, t)
                .ok_or_else(|| anyhow!("etcd's auth token from {ep} is not ASCII"))?;
        }
        let mut stream = grpc
            .server_streaming(
                request,
                http::uri::PathAndQuery::from_static(SNAPSHOT),
                codec,
            )
            .await
            .map_err(|s| anyhow!("snapshot from {ep}: {}", s.message()))?
            .into_inner();
        while let Some(m) = stream
            .message()
            .await
            .map_err(|s| anyhow!("snapshot stream from {ep} failed: {}", s.message()))?
        {
            chunk(&m.blob, m.remaining_bytes)?;
        }
        Ok(())
    })
}

use crate::rpc::{chain, set_token, tls_config};
