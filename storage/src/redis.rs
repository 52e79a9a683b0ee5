//! The Redis adapter: the commands the compatibility mode needs (DESIGN §7), on two
//! self-healing connections — one for commands, one for pub/sub — and reports kept as
//! Redis hashes when no S3 is configured.
//!
//! Connection loss: commands fail fast (a short connect timeout), and the next command
//! connects again. The subscriber connection is pinged by a watchdog; when it is lost, the
//! watchdog reconnects and subscribes again to every channel subscribed before.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Script,
    Value,
};
use tokio::sync::mpsc;

use crate::blob::{Blob, BlobError, BlobStore, BoxFuture};

/// How long one connection attempt may take before a command fails.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a command may wait for its answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the subscriber connection is checked.
const WATCHDOG_INTERVAL: Duration = Duration::from_millis(500);

/// Compare-and-set: `KEYS[1]` changes only if it holds `ARGV[1]` (an empty `ARGV[1]`
/// means: if it does not exist). `ARGV[2]` empty deletes it, else sets it with a TTL of
/// `ARGV[3]` ms. Returns 1 if it changed.
const COMPARE_AND_SET: &str = r"
local current = redis.call('GET', KEYS[1])
if (current == false and ARGV[1] == '') or current == ARGV[1] then
  if ARGV[2] == '' then
    redis.call('DEL', KEYS[1])
  else
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  end
  return 1
end
return 0
";

/// Reads `KEYS[1]` (JSON with a `ttl_ms` field) and slides its expiry by that TTL.
const GET_AND_TOUCH: &str = r"
local value = redis.call('GET', KEYS[1])
if value then
  local ok, decoded = pcall(cjson.decode, value)
  if ok and type(decoded) == 'table' and tonumber(decoded['ttl_ms']) then
    redis.call('PEXPIRE', KEYS[1], tonumber(decoded['ttl_ms']))
  end
end
return value
";

/// A message received on a subscribed channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisMessage {
    pub channel: String,
    pub payload: Vec<u8>,
}

/// One connection that is made again, on demand, after it failed.
struct Link {
    client: Client,
    config: AsyncConnectionConfig,
    current: Mutex<Option<MultiplexedConnection>>,
    /// Held while connecting, so that concurrent commands wait for one attempt.
    connecting: tokio::sync::Mutex<()>,
}

impl Link {
    fn new(client: Client, config: AsyncConnectionConfig) -> Self {
        Self { client, config, current: Mutex::new(None), connecting: Default::default() }
    }

    fn current(&self) -> Option<MultiplexedConnection> {
        self.current.lock().expect("link lock").clone()
    }

    /// Returns the connection, connecting first if there is none; the flag says whether
    /// it is a new one.
    async fn connection(&self) -> RedisResult<(MultiplexedConnection, bool)> {
        if let Some(connection) = self.current() {
            return Ok((connection, false));
        }
        let _connecting = self.connecting.lock().await;
        if let Some(connection) = self.current() {
            return Ok((connection, false));
        }
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.client.get_multiplexed_async_connection_with_config(&self.config),
        )
        .await
        .map_err(|_| BlobError::Unavailable("redis: connecting timed out".to_string()))?
        .map_err(classify)?;
        *self.current.lock().expect("link lock") = Some(connected.clone());
        Ok((connected, true))
    }

    /// Runs `call` on the connection. A connection found broken on first use since the
    /// last command (the server restarted meanwhile) is replaced and `call` runs again
    /// once: it never reached the server.
    async fn run<T, F, Fut>(&self, mut call: F) -> RedisResult<T>
    where
        F: FnMut(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let (connection, new) = self.connection().await?;
        match call(connection).await {
            Ok(value) => Ok(value),
            Err(error) if !new && error.is_connection_dropped() && !error.is_timeout() => {
                *self.current.lock().expect("link lock") = None;
                let (connection, _) = self.connection().await?;
                self.failed(call(connection).await.map_err(classify))
            }
            Err(error) => self.failed(Err(classify(error))),
        }
    }

    /// Forgets the connection after `error`, if it says the connection is broken.
    fn failed<T>(&self, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(BlobError::Unavailable(_)) = &result {
            *self.current.lock().expect("link lock") = None;
        }
        result
    }
}

/// A connected Redis: commands, publishing and subscriptions.
#[derive(Clone)]
pub struct Redis {
    commands: Arc<Link>,
    subscriber: Arc<Link>,
    /// The channels subscribed now, subscribed again after a reconnect.
    channels: Arc<Mutex<BTreeSet<String>>>,
    addr: String,
    compare_and_set: Arc<Script>,
    get_and_touch: Arc<Script>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Redis").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// Classifies a Redis error: connection trouble is worth a retry, the rest is not.
fn classify(error: redis::RedisError) -> BlobError {
    if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error()
    {
        BlobError::Unavailable(format!("redis: {error}"))
    } else {
        BlobError::Failed(format!("redis: {error}"))
    }
}

/// The result type of Redis commands.
pub type RedisResult<T> = Result<T, BlobError>;

impl Redis {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]`) and returns the
    /// connection and the receiver of messages on subscribed channels.
    pub async fn connect(
        url: &str,
    ) -> Result<(Self, mpsc::UnboundedReceiver<RedisMessage>), BlobError> {
        let info = url
            .into_connection_info()
            .map_err(|error| BlobError::Failed(format!("invalid redis url {url:?}: {error}")))?;
        let addr = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port)
            | redis::ConnectionAddr::TcpTls { host, port, .. } => format!("{host}:{port}"),
            redis::ConnectionAddr::Unix(path) => path.display().to_string(),
            other => format!("{other:?}"),
        };
        // RESP3 carries pub/sub messages on the same multiplexed connection.
        let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        let client = Client::open(info.set_redis_settings(settings))
            .map_err(|error| BlobError::Failed(format!("invalid redis url {url:?}: {error}")))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let (pushes, mut received) = mpsc::unbounded_channel::<PushInfo>();
        let redis = Self {
            commands: Arc::new(Link::new(client.clone(), config.clone())),
            subscriber: Arc::new(Link::new(client, config.set_push_sender(pushes))),
            channels: Arc::default(),
            addr,
            compare_and_set: Arc::new(Script::new(COMPARE_AND_SET)),
            get_and_touch: Arc::new(Script::new(GET_AND_TOUCH)),
        };
        redis.commands.connection().await?;
        redis.subscriber.connection().await?;
        let (messages, receiver) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(push) = received.recv().await {
                if push.kind != PushKind::Message {
                    continue;
                }
                let mut data = push.data.into_iter();
                let (Some(channel), Some(payload)) = (data.next(), data.next()) else { continue };
                let (Some(channel), Some(payload)) = (bytes_of(channel), bytes_of(payload)) else {
                    continue;
                };
                let channel = String::from_utf8_lossy(&channel).into_owned();
                if messages.send(RedisMessage { channel, payload }).is_err() {
                    return;
                }
            }
        });
        redis.spawn_watchdog();
        Ok((redis, receiver))
    }

    /// Pings the subscriber connection now and then; when it is lost, connects again and
    /// subscribes again to every channel.
    fn spawn_watchdog(&self) {
        let redis = self.clone();
        tokio::spawn(async move {
            let mut healthy = true;
            loop {
                tokio::time::sleep(WATCHDOG_INTERVAL).await;
                let checked = redis.check_subscriber().await;
                match (&checked, healthy) {
                    (Err(error), true) => {
                        tracing::warn!(addr = %redis.addr, %error, "redis connection lost; reconnecting")
                    }
                    (Ok(()), false) => tracing::info!(
                        addr = %redis.addr,
                        channels = redis.num_subscriptions(),
                        "redis reconnected: {}; subscriptions restored",
                        redis.addr
                    ),
                    _ => {}
                }
                healthy = checked.is_ok();
            }
        });
    }

    async fn check_subscriber(&self) -> RedisResult<()> {
        let (mut connection, new) = self.subscriber.connection().await?;
        if new {
            let channels: Vec<String> =
                self.channels.lock().expect("channels lock").iter().cloned().collect();
            if !channels.is_empty() {
                let subscribed = connection.subscribe(&channels).await.map_err(classify);
                self.subscriber.failed(subscribed)?;
            }
        }
        let pinged = redis::cmd("PING").query_async::<Value>(&mut connection).await;
        self.subscriber.failed(pinged.map_err(classify)).map(drop)
    }

    /// Runs `command` on the command connection, connecting first if needed.
    async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> RedisResult<T> {
        self.commands
            .run(|mut connection| async move { command.query_async(&mut connection).await })
            .await
    }

    /// Returns `host:port` of the server.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Checks that the server answers.
    pub async fn ping(&self) -> RedisResult<()> {
        self.query::<Value>(&redis::cmd("PING")).await.map(drop)
    }

    /// Returns the value of `key`.
    pub async fn get(&self, key: &str) -> RedisResult<Option<Vec<u8>>> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    /// Returns the value of `key` (JSON with a `ttl_ms` field) and slides its expiry.
    pub async fn get_and_touch(&self, key: &str) -> RedisResult<Option<Vec<u8>>> {
        let script = &self.get_and_touch;
        self.commands
            .run(
                |mut connection| async move { script.key(key).invoke_async(&mut connection).await },
            )
            .await
    }

    /// Sets `key` to `value` for `ttl` unless it exists; returns whether it was set.
    pub async fn set_new(&self, key: &str, value: &[u8], ttl: Duration) -> RedisResult<bool> {
        let mut command = redis::cmd("SET");
        command.arg(key).arg(value).arg("NX").arg("PX").arg(ttl.as_millis().max(1) as u64);
        let set: Option<String> = self.query(&command).await?;
        Ok(set.is_some())
    }

    /// Returns the value of `key`, first setting it (with no expiry) to `value` if absent.
    pub async fn get_or_set(&self, key: &str, value: &[u8]) -> RedisResult<Vec<u8>> {
        let old: Option<Vec<u8>> =
            self.query(redis::cmd("SET").arg(key).arg(value).arg("NX").arg("GET")).await?;
        Ok(old.unwrap_or_else(|| value.to_vec()))
    }

    /// Changes `key` from `expected` (`None`: absent) to `new` (`None`: deleted, else a
    /// value and its TTL), atomically; returns false if `key` held something else.
    pub async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<(&[u8], Duration)>,
    ) -> RedisResult<bool> {
        let (value, ttl_ms) = match new {
            Some((value, ttl)) => (value, ttl.as_millis().max(1) as u64),
            None => (&[][..], 0),
        };
        let script = &self.compare_and_set;
        let expected = expected.unwrap_or_default();
        let changed: i64 = self
            .commands
            .run(|mut connection| async move {
                script
                    .key(key)
                    .arg(expected)
                    .arg(value)
                    .arg(ttl_ms)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Ok(changed == 1)
    }

    /// Publishes `messages` in order, in one round trip.
    pub async fn publish(&self, messages: &[(String, Vec<u8>)]) -> RedisResult<()> {
        let mut pipeline = redis::pipe();
        for (channel, payload) in messages {
            pipeline.publish(channel, payload.as_slice()).ignore();
        }
        let pipeline = &pipeline;
        self.commands
            .run(|mut connection| async move { pipeline.query_async::<()>(&mut connection).await })
            .await
    }

    /// Subscribes to `channel`; its messages arrive on the receiver from [`Redis::connect`],
    /// also after a reconnect.
    pub async fn subscribe(&self, channel: &str) -> RedisResult<()> {
        // Listed first: a reconnect racing with this call subscribes it too.
        self.channels.lock().expect("channels lock").insert(channel.to_string());
        let subscribed = async {
            let (mut connection, _) = self.subscriber.connection().await?;
            self.subscriber.failed(connection.subscribe(channel).await.map_err(classify))
        };
        match subscribed.await {
            Ok(()) => Ok(()),
            Err(error) => {
                self.channels.lock().expect("channels lock").remove(channel);
                Err(error)
            }
        }
    }

    /// Unsubscribes from `channel`.
    pub async fn unsubscribe(&self, channel: &str) -> RedisResult<()> {
        self.channels.lock().expect("channels lock").remove(channel);
        let Some(mut connection) = self.subscriber.current() else { return Ok(()) };
        self.subscriber.failed(connection.unsubscribe(channel).await.map_err(classify))
    }

    /// Returns how many channels are subscribed now.
    pub fn num_subscriptions(&self) -> usize {
        self.channels.lock().expect("channels lock").len()
    }
}

fn bytes_of(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        _ => None,
    }
}

/// Reports kept in Redis (compatibility mode without S3): one hash per report under
/// `{prefix}:report:{id}` with fields `name`, `content_type` and `body`, and a TTL.
#[derive(Debug, Clone)]
pub struct RedisBlobStore {
    redis: Redis,
    prefix: String,
}

impl RedisBlobStore {
    /// Returns the store of reports under `{prefix}:report:`.
    pub fn new(redis: Redis, prefix: &str) -> Self {
        Self { redis, prefix: prefix.to_string() }
    }

    fn key(&self, id: &str) -> String {
        format!("{}:report:{id}", self.prefix)
    }
}

impl BlobStore for RedisBlobStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn put<'a>(
        &'a self,
        id: &'a str,
        blob: Blob,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BlobError>> {
        Box::pin(async move {
            let key = self.key(id);
            let mut pipeline = redis::pipe();
            pipeline
                .atomic()
                .hset_multiple(
                    &key,
                    &[
                        ("name", blob.name.as_bytes()),
                        ("content_type", blob.content_type.as_bytes()),
                        ("body", blob.bytes.as_slice()),
                    ],
                )
                .ignore()
                .pexpire(&key, ttl.as_millis().max(1) as i64)
                .ignore();
            let pipeline = &pipeline;
            self.redis
                .commands
                .run(|mut connection| async move { pipeline.query_async::<()>(&mut connection).await })
                .await
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Blob>, BlobError>> {
        Box::pin(async move {
            let mut command = redis::cmd("HMGET");
            command.arg(self.key(id)).arg("name").arg("content_type").arg("body");
            let fields: Vec<Option<Vec<u8>>> = self.redis.query(&command).await?;
            let mut fields = fields.into_iter();
            let (Some(Some(name)), Some(Some(content_type)), Some(Some(bytes))) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Ok(None);
            };
            Ok(Some(Blob {
                name: String::from_utf8_lossy(&name).into_owned(),
                content_type: String::from_utf8_lossy(&content_type).into_owned(),
                bytes,
            }))
        })
    }
}
