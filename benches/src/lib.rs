//! Load generation for the benches: sequential latency into an HDR histogram, throughput
//! with a fixed number of requests in flight, and the floor the feature store is compared
//! against — a bare tonic echo service answering bytes sized like a real response.
//! Its modules hold what the multi-process runs (soak, chaos) share: the fstore processes
//! (`cluster`), their memory (`memory`) and a seeded generator (`rng`).

pub mod cluster;
pub mod memory;
pub mod rng;

use std::collections::HashMap;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use fstore_proto::api;
use hdrhistogram::Histogram;
use prost::Message;
use prost::bytes::{BufMut, Bytes};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

/// The generated bench messages: the echo service and a light view of GetFeaturesResponse.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("fstore.bench.v1");
}

use pb::echo_client::EchoClient;
use pb::echo_server::{Echo, EchoServer};
use pb::{EchoReply, EchoRequest, GetFeaturesStatusView};

/// The gRPC path of `featurestore.v1.FeatureStore/GetFeatures`.
pub const GET_FEATURES_PATH: &str = "/featurestore.v1.FeatureStore/GetFeatures";

/// The largest reply the echo service agrees to build.
pub const MAX_ECHO_REPLY: u32 = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Load generation
// ---------------------------------------------------------------------------------------

/// One kind of request a load generator sends. `Err` describes a failed or wrong answer.
pub trait Call: Clone + Send + 'static {
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

/// Failures seen while measuring: how many, and the first one's description.
#[derive(Debug, Default, Clone)]
pub struct Failures {
    pub count: u64,
    pub first: Option<String>,
}

impl Failures {
    pub fn add(&mut self, e: String) {
        self.count += 1;
        self.first.get_or_insert(e);
    }

    fn merge(&mut self, other: Failures) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }
}

/// Latencies of successful sequential calls, in microseconds.
#[derive(Debug)]
pub struct Latency {
    pub histogram: Histogram<u64>,
    pub failures: Failures,
}

impl Latency {
    pub fn p50_us(&self) -> u64 {
        self.histogram.value_at_quantile(0.50)
    }

    pub fn p99_us(&self) -> u64 {
        self.histogram.value_at_quantile(0.99)
    }
}

/// Sends `warmup` unmeasured calls, then `n` measured calls one after another.
pub async fn sequential<C: Call>(caller: &mut C, warmup: usize, n: usize) -> Latency {
    // 1 µs .. 60 s at 3 significant digits.
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    let mut failures = Failures::default();
    for _ in 0..warmup {
        if let Err(e) = caller.call().await {
            failures.add(format!("warm-up: {e}"));
        }
    }
    for _ in 0..n {
        let start = Instant::now();
        let r = caller.call().await;
        let us = start.elapsed().as_micros().max(1) as u64;
        match r {
            Ok(()) => histogram.saturating_record(us),
            Err(e) => failures.add(e),
        }
    }
    Latency {
        histogram,
        failures,
    }
}

/// Successful calls completed in a window with a fixed number of calls in flight.
#[derive(Debug)]
pub struct Throughput {
    pub requests: u64,
    pub failures: Failures,
    /// From the first call sent to the last one answered.
    pub elapsed: Duration,
}

impl Throughput {
    pub fn per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Keeps `in_flight` calls outstanding (one task each, sharing `callers` round-robin)
/// until `duration` has passed or `max_requests` calls were sent, whichever comes first.
pub async fn throughput<C: Call>(
    callers: &[C],
    in_flight: usize,
    duration: Duration,
    max_requests: u64,
) -> Throughput {
    assert!(!callers.is_empty(), "throughput needs at least one caller");
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for i in 0..in_flight.max(1) {
        let mut caller = callers[i % callers.len()].clone();
        let sent = sent.clone();
        tasks.spawn(async move {
            let mut ok = 0u64;
            let mut failures = Failures::default();
            while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < max_requests {
                match caller.call().await {
                    Ok(()) => ok += 1,
                    Err(e) => failures.add(e),
                }
            }
            (ok, failures)
        });
    }
    let mut requests = 0;
    let mut failures = Failures::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((ok, f)) => {
                requests += ok;
                failures.merge(f);
            }
            Err(e) => failures.add(format!("load task ended abnormally: {e}")),
        }
    }
    Throughput {
        requests,
        failures,
        elapsed: start.elapsed(),
    }
}

/// A listener on `127.0.0.1:0`. With `nodelay`, TCP_NODELAY is set on the listening
/// socket, and Linux copies it onto every connection accepted from it: a server that does
/// not set the option itself then answers without Nagle's delay anyway.
pub fn local_listener(nodelay: bool) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    if nodelay {
        socket.set_nodelay(true)?;
    }
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    socket.listen(1024)
}

/// `n` separate HTTP/2 connections to `url`.
pub async fn channels(url: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        out.push(Endpoint::from_shared(url.to_string())?.connect().await?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The echo floor
// ---------------------------------------------------------------------------------------

/// Answers every call with `reply_size` bytes, built once per size and shared after.
#[derive(Debug, Default, Clone)]
pub struct EchoService {
    replies: Arc<RwLock<HashMap<u32, Bytes>>>,
}

impl EchoService {
    fn reply(&self, size: u32) -> Bytes {
        if let Some(b) = self
            .replies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&size)
        {
            return b.clone();
        }
        self.replies
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(size)
            .or_insert_with(|| Bytes::from(vec![0xa5; size as usize]))
            .clone()
    }
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let size = request.get_ref().reply_size;
        if size > MAX_ECHO_REPLY {
            return Err(Status::invalid_argument(format!(
                "reply_size {size} is more than {MAX_ECHO_REPLY}"
            )));
        }
        Ok(Response::new(EchoReply {
            payload: self.reply(size),
        }))
    }
}

/// A running echo server; dropping it leaves it running until the runtime ends.
#[derive(Debug)]
pub struct EchoServerHandle {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl EchoServerHandle {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting and finishes the calls in flight.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}

/// Serves [`EchoService`] on `listener` with tonic's default server settings, TCP_NODELAY
/// on accepted connections included (what `Server::serve` sets on a listener it binds).
pub fn serve_echo(listener: TcpListener) -> anyhow::Result<EchoServerHandle> {
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EchoServer::new(EchoService::default()))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stopped.await;
            }),
    );
    Ok(EchoServerHandle { addr, stop, task })
}

/// Encoded length of a proto3 `bytes` field (number < 16) holding `len` bytes.
fn bytes_field_len(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        1 + prost::length_delimiter_len(len) + len
    }
}

/// The longest payload whose `bytes` field, plus `fixed` other bytes, encodes to at most
/// `target` bytes.
fn payload_len_for(target: usize, fixed: usize) -> usize {
    let room = target.saturating_sub(fixed);
    (0..=room.min(11))
        .map(|overhead| room - overhead)
        .find(|&p| bytes_field_len(p) <= room)
        .unwrap_or(0)
}

/// The payload length of an `EchoReply` that encodes to `encoded` bytes (as near as the
/// varint length prefix allows).
pub fn echo_reply_payload_len(encoded: usize) -> u32 {
    payload_len_for(encoded, 0) as u32
}

/// An `EchoRequest` that encodes to `encoded` bytes (as near as possible) and asks for a
/// reply payload of `reply_payload` bytes.
pub fn echo_request(encoded: usize, reply_payload: u32) -> EchoRequest {
    let fixed = if reply_payload == 0 {
        0
    } else {
        1 + prost::encoding::encoded_len_varint(u64::from(reply_payload))
    };
    EchoRequest {
        payload: Bytes::from(vec![0x5a; payload_len_for(encoded, fixed)]),
        reply_size: reply_payload,
    }
}

/// An echo call with a prepared request; checks the reply's length.
#[derive(Debug, Clone)]
pub struct EchoCall {
    client: EchoClient<Channel>,
    request: EchoRequest,
}

impl EchoCall {
    pub fn new(channel: Channel, request: EchoRequest) -> Self {
        EchoCall {
            client: EchoClient::new(channel).max_decoding_message_size(usize::MAX),
            request,
        }
    }
}

impl Call for EchoCall {
    async fn call(&mut self) -> Result<(), String> {
        let reply = self
            .client
            .echo(self.request.clone())
            .await
            .map_err(|s| format!("echo: {:?}: {}", s.code(), s.message()))?;
        let got = reply.get_ref().payload.len();
        if got != self.request.reply_size as usize {
            return Err(format!(
                "echo answered {got} bytes, not {}",
                self.request.reply_size
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Feature store calls
// ---------------------------------------------------------------------------------------

/// A codec that sends an already encoded message as is and decodes the answer as `U`,
/// so a load generator pays neither for building nor for fully decoding messages.
#[derive(Debug)]
pub struct PreEncodedCodec<U>(PhantomData<fn() -> U>);

impl<U> Default for PreEncodedCodec<U> {
    fn default() -> Self {
        PreEncodedCodec(PhantomData)
    }
}

#[derive(Debug)]
pub struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

#[derive(Debug)]
pub struct ProstDecoder<U>(PhantomData<fn() -> U>);

impl<U: Message + Default> Decoder for ProstDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode the answer: {e}")))
    }
}

impl<U: Message + Default + Send + 'static> Codec for PreEncodedCodec<U> {
    type Encode = Bytes;
    type Decode = U;
    type Encoder = RawEncoder;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ProstDecoder<U> {
        ProstDecoder(PhantomData)
    }
}

/// What a hit-path answer must be: `expect` results, all READY and from the cache, and
/// no ticket.
fn check_hit<'a>(
    expect: usize,
    ticket: &str,
    results: impl ExactSizeIterator<Item = (i32, bool)> + 'a,
) -> Result<(), String> {
    if results.len() != expect {
        return Err(format!("{} results, expected {expect}", results.len()));
    }
    let mut not_ready = 0;
    let mut not_cached = 0;
    let mut first_status = None;
    for (status, from_cache) in results {
        if status != api::Status::Ready as i32 {
            not_ready += 1;
            first_status.get_or_insert(status);
        }
        if !from_cache {
            not_cached += 1;
        }
    }
    if not_ready > 0 || not_cached > 0 || !ticket.is_empty() {
        return Err(format!(
            "{not_ready} of {expect} results not READY (first status {}), {not_cached} not from the cache, ticket {ticket:?}",
            first_status
                .and_then(|s| api::Status::try_from(s).ok())
                .map_or("-", |s| s.as_str_name()),
        ));
    }
    Ok(())
}

/// GetFeatures with a pre-encoded request, decoding only status and `from_cache` of each
/// result: the client's work stays close to [`EchoCall`]'s.
#[derive(Debug, Clone)]
pub struct FeaturesCall {
    grpc: tonic::client::Grpc<Channel>,
    request: Bytes,
    expect: usize,
    /// `authorization: Bearer <key>`, for a server that wants keys.
    bearer: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl FeaturesCall {
    pub fn new(channel: Channel, request: &api::GetFeaturesRequest) -> Self {
        FeaturesCall {
            grpc: tonic::client::Grpc::new(channel).max_decoding_message_size(usize::MAX),
            request: Bytes::from(request.encode_to_vec()),
            expect: request.entities.len() * request.features.len(),
            bearer: None,
        }
    }

    /// Every call sends `key` as `authorization: Bearer`.
    pub fn with_key(mut self, key: Option<&str>) -> Self {
        self.bearer = key.and_then(|k| format!("Bearer {k}").parse().ok());
        self
    }
}

impl Call for FeaturesCall {
    async fn call(&mut self) -> Result<(), String> {
        self.grpc
            .ready()
            .await
            .map_err(|e| format!("channel not ready: {e}"))?;
        let mut request = Request::new(self.request.clone());
        if let Some(b) = &self.bearer {
            request.metadata_mut().insert("authorization", b.clone());
        }
        let answer = self
            .grpc
            .unary(
                request,
                PathAndQuery::from_static(GET_FEATURES_PATH),
                PreEncodedCodec::<GetFeaturesStatusView>::default(),
            )
            .await
            .map_err(|s| format!("GetFeatures: {:?}: {}", s.code(), s.message()))?;
        let view = answer.get_ref();
        check_hit(
            self.expect,
            &view.ticket,
            view.results.iter().map(|r| (r.status, r.from_cache)),
        )
    }
}

/// GetFeatures through the generated client, building and fully decoding messages as an
/// application would.
#[derive(Debug, Clone)]
pub struct FeaturesFullCall {
    client: api::feature_store_client::FeatureStoreClient<Channel>,
    request: api::GetFeaturesRequest,
}

impl FeaturesFullCall {
    pub fn new(channel: Channel, request: api::GetFeaturesRequest) -> Self {
        FeaturesFullCall {
            client: api::feature_store_client::FeatureStoreClient::new(channel)
                .max_decoding_message_size(usize::MAX),
            request,
        }
    }
}

impl Call for FeaturesFullCall {
    async fn call(&mut self) -> Result<(), String> {
        let answer = self
            .client
            .get_features(self.request.clone())
            .await
            .map_err(|s| format!("GetFeatures: {:?}: {}", s.code(), s.message()))?;
        let r = answer.get_ref();
        check_hit(
            self.request.entities.len() * self.request.features.len(),
            &r.ticket,
            r.results.iter().map(|r| (r.status, r.from_cache)),
        )
    }
}

/// Either way of calling GetFeatures, chosen at run time.
#[derive(Debug, Clone)]
pub enum AnyFeaturesCall {
    Light(FeaturesCall),
    Full(FeaturesFullCall),
}

impl Call for AnyFeaturesCall {
    async fn call(&mut self) -> Result<(), String> {
        match self {
            AnyFeaturesCall::Light(c) => c.call().await,
            AnyFeaturesCall::Full(c) => c.call().await,
        }
    }
}

/// A setting from the environment variable `name`, or `default` when it is unset.
pub fn env<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a valid value")),
        Err(_) => Ok(default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_messages_match_the_sizes_asked_for() {
        for target in [
            0usize, 1, 2, 3, 10, 126, 127, 128, 129, 130, 131, 2000, 16_385, 16_386,
        ] {
            let reply = EchoReply {
                payload: Bytes::from(vec![0; echo_reply_payload_len(target) as usize]),
            };
            let got = reply.encoded_len();
            // Below 3 bytes only an empty payload fits.
            assert!(got <= target, "reply {target}: {got}");
            assert!(target < 3 || target - got <= 1, "reply {target}: {got}");
            for reply_payload in [0u32, 5, 300, 100_000] {
                let got = echo_request(target, reply_payload).encoded_len();
                let min = if reply_payload == 0 {
                    0
                } else {
                    1 + prost::encoding::encoded_len_varint(u64::from(reply_payload))
                };
                if target >= min + 3 {
                    assert!(
                        got <= target && target - got <= 1,
                        "request {target}/{reply_payload}: {got}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_status_view_reads_real_responses() {
        let response = api::GetFeaturesResponse {
            results: vec![
                api::FeatureResult {
                    entity_id: "item:1".into(),
                    feature: "b.f000".into(),
                    version: 1,
                    status: api::Status::Ready as i32,
                    value: Some(api::Value {
                        kind: Some(api::value::Kind::F64(1.0)),
                    }),
                    computed_at_ms: 1,
                    age_ms: 2,
                    from_cache: true,
                    ..Default::default()
                },
                api::FeatureResult {
                    status: api::Status::Pending as i32,
                    ..Default::default()
                },
            ],
            ticket: "t".into(),
            canceled: false,
        };
        let view =
            GetFeaturesStatusView::decode(response.encode_to_vec().as_slice()).expect("decodes");
        let got: Vec<_> = view
            .results
            .iter()
            .map(|r| (r.status, r.from_cache))
            .collect();
        assert_eq!(
            got,
            vec![
                (api::Status::Ready as i32, true),
                (api::Status::Pending as i32, false)
            ]
        );
        assert_eq!(view.ticket, "t");
        assert!(check_hit(2, &view.ticket, got.into_iter()).is_err());
    }
}
