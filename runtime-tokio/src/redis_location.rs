//! A location service shared by several `serve` instances over Redis
//! (issue 20; feature `redis`).
//!
//! The sans-IO core never waits on Redis: every instance keeps the whole
//! store in memory (a [`SharedLocation`] with a journal), decides from it,
//! and this module mirrors it on a thread of its own:
//!
//! - **Out.** Each change the core commits ([`LocationChange`]) is written
//!   to Redis by one Lua script per AOR, atomically: the AOR's hash
//!   `PREFIX:loc:AOR` gets one field per binding (its key: the instance
//!   and `reg-id` of RFC 5626, else the contact), fields of removed
//!   bindings are deleted, the key's expiry is pushed out to the latest
//!   binding's (`PEXPIREAT`, never pulled in: another instance's binding
//!   may last longer), and `INSTANCE AOR` is published on `PREFIX:loc`.
//!   A dead instance leaves nothing stale: its keys expire with their
//!   bindings.
//! - **In.** Every instance subscribes to `PREFIX:loc`; on another
//!   instance's change it reads the AOR's hash and applies it
//!   ([`SharedLocation::apply`]) over the version it read before, so that
//!   a change committed here meanwhile is never overwritten (the AOR is
//!   read again once that change is written).
//! - **Start and failure.** At start, and after every reconnection, the
//!   mirror first writes what changed here while Redis was away, then reads
//!   every AOR back (`SCAN`) and drops AORs Redis no longer has. While Redis
//!   is away the instance serves from memory, logs once, and retries with
//!   back-off (100 ms doubling to 5 s); changes wait merged per AOR.
//!
//! Bindings carry times as `Instant`s; Redis holds wall-clock milliseconds
//! (instances on different machines share the wall clock, not an
//! `Instant`), converted at this boundary.

use redis::aio::MultiplexedConnection;
use redis::Script;
use serde::{Deserialize, Serialize};
use sipline::auth::{NonceJournal, NonceLedger, NonceUse};
use sipline::registrar::{Binding, LocationChange, LocationJournal, SharedLocation, Source};
use std::collections::{BTreeMap, BTreeSet};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// The script that writes one AOR's change (see the module docs).
/// KEYS[1]: the AOR's hash. ARGV: expiry (Unix ms), channel, message,
/// number of fields to delete, those fields, then field/value pairs.
const WRITE: &str = r"
local key = KEYS[1]
local deletes = tonumber(ARGV[4])
for i = 5, 4 + deletes do redis.call('HDEL', key, ARGV[i]) end
local i = 5 + deletes
while i < #ARGV do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
  i = i + 2
end
if redis.call('EXISTS', key) == 1 then
  local at = redis.call('PEXPIRETIME', key)
  if at < tonumber(ARGV[1]) then redis.call('PEXPIREAT', key, ARGV[1]) end
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
";

/// How long the mirror lets changes gather after the first wakes it.
const COALESCE: Duration = Duration::from_millis(1);

/// How many AORs one round trip writes or reads at most.
const BATCH: usize = 256;

/// How long one Redis operation may take before the connection is taken
/// for lost.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// The first and the longest wait between reconnection attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Why the mirror could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MirrorError {
    /// The URL is not a Redis URL (`redis://HOST:PORT[/DB]`).
    #[error("bad Redis URL: {0}")]
    Url(#[source] redis::RedisError),
    /// The mirror's thread could not be started.
    #[error("cannot start the Redis mirror: {0}")]
    Thread(#[source] std::io::Error),
}

/// Where the mirror stands, as [`MirrorHandle::status`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MirrorStatus {
    /// Not connected yet, or reconnecting.
    Connecting,
    /// Connected; every AOR was read at least once since.
    Synced,
}

/// A running mirror ([`mirror`]); dropping it stops the thread.
#[derive(Debug)]
pub struct MirrorHandle {
    status: tokio::sync::watch::Receiver<MirrorStatus>,
    stop: Arc<Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MirrorHandle {
    /// Where the mirror stands now.
    pub fn status(&self) -> MirrorStatus {
        *self.status.borrow()
    }

    /// Waits (blocking, at most `limit`) until the mirror has read the
    /// store from Redis once: what `serve` does before it takes requests,
    /// so that a restarted instance knows every binding at once. False if
    /// Redis did not answer in time (the instance serves from memory and
    /// reads the store when Redis comes back).
    pub fn wait_synced(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.status() == MirrorStatus::Synced {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.status() == MirrorStatus::Synced
    }
}

impl Drop for MirrorHandle {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What [`mirror`] makes: the stores to give every worker's
/// `ServerConfig` (`location`, `nonce_ledger`), and the mirror's handle to
/// keep as long as they serve.
#[derive(Debug)]
#[non_exhaustive]
pub struct Mirrored {
    /// The location service, mirrored.
    pub location: SharedLocation,
    /// The nonce ledger, whose recorded answers are told to the other
    /// instances and theirs to it (a replayed answer is refused at every
    /// instance once the use has arrived).
    pub nonce_ledger: NonceLedger,
    /// The running mirror.
    pub handle: MirrorHandle,
}

/// A [`SharedLocation`] and a [`NonceLedger`] mirrored to Redis at `url`
/// (`redis://HOST:PORT[/DB]`), as instance `instance` (unique among the
/// instances sharing the store), under key prefix `prefix` (`sipline` in
/// the CLI). `keys` are the instance's own secret random numbers: they key
/// the tables' hashing and start its nonce counter.
///
/// ```no_run
/// let m = sipline_tokio::redis_location::mirror("redis://127.0.0.1:6379", "a", "sipline", (1, 2)).unwrap();
/// m.handle.wait_synced(std::time::Duration::from_secs(3));
/// # let _ = (m.location, m.nonce_ledger);
/// ```
pub fn mirror(url: &str, instance: &str, prefix: &str, keys: (u64, u64)) -> Result<Mirrored, MirrorError> {
    let client = redis::Client::open(url).map_err(MirrorError::Url)?;
    let wake = Arc::new(Notify::new());
    let woken = Arc::clone(&wake);
    let (location, journal) = SharedLocation::with_journal(keys.0, keys.1, move || woken.notify_one());
    let woken = Arc::clone(&wake);
    // The keys are the instance's own random numbers: its nonce counter
    // starts somewhere no other instance's does.
    let first = (keys.0 ^ keys.1.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let (nonce_ledger, nonces) = NonceLedger::with_journal(first, move || woken.notify_one());
    let (status_tx, status) = tokio::sync::watch::channel(MirrorStatus::Connecting);
    let stop = Arc::new(Notify::new());
    let mirror = Mirror {
        client,
        instance: instance.to_owned(),
        prefix: prefix.to_owned(),
        location: location.clone(),
        journal,
        ledger: nonce_ledger.clone(),
        nonces,
        uses: std::collections::VecDeque::new(),
        wake,
        stop: Arc::clone(&stop),
        status: status_tx,
        pending: BTreeMap::new(),
        refetch: BTreeSet::new(),
        script: Script::new(WRITE),
    };
    let thread = std::thread::Builder::new()
        .name("sipline-redis".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            match runtime {
                Ok(runtime) => runtime.block_on(mirror.run()),
                Err(e) => tracing::error!(error = %e, "redis mirror: no runtime"),
            }
        })
        .map_err(MirrorError::Thread)?;
    Ok(Mirrored { location, nonce_ledger, handle: MirrorHandle { status, stop, thread: Some(thread) } })
}

/// One binding as Redis holds it (JSON).
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    contact: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    q: Option<u16>,
    /// Wall-clock expiry, Unix milliseconds.
    expires: u64,
    /// Wall-clock registration time, Unix milliseconds.
    registered: u64,
    call_id: String,
    cseq: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reg_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    temp_gruus: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<(SocketAddr, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    path: Vec<String>,
}

/// Wall-clock Unix milliseconds of `at`.
fn wall_ms(at: Instant) -> u64 {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let wall_at = if at >= now { wall + (at - now) } else { wall.checked_sub(now - at).unwrap_or(UNIX_EPOCH) };
    u64::try_from(wall_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(u64::MAX)
}

/// The `Instant` of wall-clock Unix milliseconds `ms`.
fn instant_of(ms: u64) -> Instant {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let wall_now = u64::try_from(wall.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(0);
    if ms >= wall_now {
        now + Duration::from_millis(ms - wall_now)
    } else {
        now.checked_sub(Duration::from_millis(wall_now - ms)).unwrap_or(now)
    }
}

/// The hash field of a binding: one per binding key of the registrar
/// (`Binding::same_key`: RFC 5626 instance and reg-id, else the contact).
fn field(b: &Binding) -> String {
    match &b.instance {
        Some(instance) => format!("i:{}:{}", instance.to_ascii_lowercase(), b.reg_id.unwrap_or(0)),
        None => format!("c:{}", b.contact),
    }
}

fn record(b: &Binding) -> Record {
    Record {
        contact: b.contact.clone(),
        q: b.q,
        expires: wall_ms(b.expires),
        registered: wall_ms(b.registered_at),
        call_id: b.call_id.clone(),
        cseq: b.cseq,
        instance: b.instance.clone(),
        reg_id: b.reg_id,
        temp_gruus: b.temp_gruus.clone(),
        source: b.source.as_ref().map(|s| (s.addr, s.transport.clone())),
        path: b.path.clone(),
    }
}

fn binding(aor: &str, r: Record) -> Binding {
    Binding {
        aor: aor.to_owned(),
        contact: r.contact,
        q: r.q,
        expires: instant_of(r.expires),
        registered_at: instant_of(r.registered),
        call_id: r.call_id,
        cseq: r.cseq,
        instance: r.instance,
        reg_id: r.reg_id,
        temp_gruus: r.temp_gruus,
        source: r.source.map(|(addr, transport)| Source { addr, transport }),
        path: r.path,
    }
}

/// An AOR's change waiting to be written: (the bindings Redis was last
/// given, the bindings now).
type Pending = (Arc<[Binding]>, Arc<[Binding]>);

/// Why a connected session with Redis ended.
type Lost = redis::RedisError;

struct Mirror {
    client: redis::Client,
    instance: String,
    prefix: String,
    location: SharedLocation,
    journal: LocationJournal,
    /// The nonce ledger the workers share, and its journal.
    ledger: NonceLedger,
    nonces: NonceJournal,
    /// Nonce uses not yet told (while Redis is away, the newest 65 536).
    uses: std::collections::VecDeque<NonceUse>,
    wake: Arc<Notify>,
    stop: Arc<Notify>,
    status: tokio::sync::watch::Sender<MirrorStatus>,
    /// Changes not yet written, merged per AOR: (first before, last after).
    pending: BTreeMap<String, Pending>,
    /// AORs to read again once the pending changes are written.
    refetch: BTreeSet<String>,
    script: Script,
}

impl Mirror {
    async fn run(mut self) {
        let mut backoff = BACKOFF.0;
        let mut down_logged = false;
        let stop = Arc::clone(&self.stop);
        loop {
            let result = tokio::select! {
                () = stop.notified() => return,
                r = self.session() => r,
            };
            // A session that got in sync ends an outage's back-off.
            let was_synced = *self.status.borrow() == MirrorStatus::Synced;
            let _ = self.status.send(MirrorStatus::Connecting);
            if was_synced {
                backoff = BACKOFF.0;
                down_logged = false;
            }
            if let Err(e) = result {
                // Logged once per outage.
                if !down_logged {
                    tracing::warn!(error = %e, "redis location store unreachable: serving from memory, retrying");
                    down_logged = true;
                }
            }
            // Keep collecting changes while away.
            tokio::select! {
                () = stop.notified() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            self.collect();
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    }

    /// Takes every queued change into `pending`.
    fn collect(&mut self) {
        while let Some(LocationChange { aor, before, after }) = self.journal.try_next() {
            self.pending.entry(aor).and_modify(|(_, last)| last.clone_from(&after)).or_insert((before, after));
        }
        while let Some(used) = self.nonces.try_next() {
            // Bounded while away: the newest are the ones worth telling.
            if self.uses.len() >= 65_536 {
                self.uses.pop_front();
            }
            self.uses.push_back(used);
        }
    }

    fn nonce_channel(&self) -> String {
        format!("{}:nonce", self.prefix)
    }

    fn channel(&self) -> String {
        format!("{}:loc", self.prefix)
    }

    fn key(&self, aor: &str) -> String {
        format!("{}:loc:{aor}", self.prefix)
    }

    /// One connection's life: subscribe, write what waited, read
    /// everything, then follow both directions until something fails.
    async fn session(&mut self) -> Result<(), Lost> {
        let mut con = timed(self.client.get_multiplexed_async_connection()).await?;
        let mut pubsub = timed(self.client.get_async_pubsub()).await?;
        timed(pubsub.subscribe(&[self.channel(), self.nonce_channel()])).await?;
        let mut messages = Box::pin(pubsub.into_on_message());
        let _: String = timed(self.script.prepare_invoke().load_async(&mut con)).await?;
        self.collect();
        self.flush(&mut con).await?;
        self.resync(&mut con).await?;
        let _ = self.status.send(MirrorStatus::Synced);
        tracing::info!("redis location store in sync");
        loop {
            let next = poll_fn(|cx| futures_core::Stream::poll_next(Pin::as_mut(&mut messages), cx));
            tokio::select! {
                () = self.wake.notified() => {
                    // Let a busy server's changes gather first: the workers
                    // do not wake this thread again meanwhile (the journal
                    // is armed), so a burst costs one wake-up and one round
                    // trip per COALESCE, not one per registration.
                    tokio::time::sleep(COALESCE).await;
                    self.collect();
                    self.flush(&mut con).await?;
                }
                message = next => {
                    let Some(message) = message else {
                        return Err(redis::RedisError::from((redis::ErrorKind::Io, "subscription closed")));
                    };
                    // This one and every other already here: one batch.
                    let mut theirs = BTreeSet::new();
                    let mut message = Some(message);
                    let nonce_channel = self.nonce_channel();
                    while let Some(m) = message.take() {
                        let text = String::from_utf8_lossy(m.get_payload_bytes()).into_owned();
                        if m.get_channel_name() == nonce_channel {
                            self.told(&text);
                        } else if let Some((from, aor)) = text.split_once(' ') {
                            if from != self.instance {
                                theirs.insert(aor.to_owned());
                            }
                        }
                        if theirs.len() >= BATCH {
                            break;
                        }
                        // Already here, or not: no waiting.
                        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                        message = match futures_core::Stream::poll_next(Pin::as_mut(&mut messages), &mut cx) {
                            std::task::Poll::Ready(m) => m,
                            std::task::Poll::Pending => None,
                        };
                    }
                    if !theirs.is_empty() {
                        // Ours first, then theirs.
                        self.collect();
                        self.flush(&mut con).await?;
                        let theirs: Vec<String> = theirs.into_iter().collect();
                        self.fetch_all(&mut con, &theirs).await?;
                    }
                }
            }
        }
    }

    /// A nonce use another instance told: into our ledger.
    fn told(&self, text: &str) {
        let mut parts = text.split(' ');
        let (Some(from), Some(stamp), Some(nc), Some(spent)) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        if from == self.instance {
            return;
        }
        if let (Ok(stamp), Ok(last_nc)) = (stamp.parse(), nc.parse()) {
            self.ledger.apply(NonceUse { stamp, last_nc, spent: spent == "1" });
        }
    }

    /// Writes every pending change, then reads again the AORs whose
    /// remote change could not be applied over ours.
    async fn flush(&mut self, con: &mut MultiplexedConnection) -> Result<(), Lost> {
        // The answers recorded here, to the other instances' ledgers.
        let uses: Vec<NonceUse> = std::mem::take(&mut self.uses).into();
        for chunk in uses.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for u in chunk {
                let text = format!("{} {} {} {}", self.instance, u.stamp, u.last_nc, u8::from(u.spent));
                pipe.cmd("PUBLISH").arg(self.nonce_channel()).arg(text).ignore();
            }
            timed(pipe.query_async::<()>(con)).await?;
        }
        // In batches, one round trip each (a busy server commits faster
        // than one script per round trip goes).
        while !self.pending.is_empty() {
            let mut batch = Vec::new();
            while batch.len() < BATCH {
                let Some(entry) = self.pending.pop_first() else { break };
                batch.push(entry);
            }
            let mut pipe = redis::pipe();
            for (aor, (before, after)) in &batch {
                self.write(&mut pipe, aor, before, after);
            }
            if let Err(e) = timed(pipe.query_async::<()>(con)).await {
                // Not written: they wait for the next connection (merged
                // with what changed since).
                for (aor, (before, after)) in batch {
                    let merged = match self.pending.remove(&aor) {
                        Some((_, newer)) => (before, newer),
                        None => (before, after),
                    };
                    self.pending.insert(aor, merged);
                }
                return Err(e);
            }
        }
        let again: Vec<String> = std::mem::take(&mut self.refetch).into_iter().collect();
        self.fetch_all(con, &again).await
    }

    /// Adds the script call that writes `aor`'s change to `pipe`.
    fn write(&self, pipe: &mut redis::Pipeline, aor: &str, before: &[Binding], after: &[Binding]) {
        let kept: BTreeSet<String> = after.iter().map(field).collect();
        let deleted: Vec<String> = before.iter().map(field).filter(|f| !kept.contains(f)).collect();
        let expires = after.iter().map(|b| wall_ms(b.expires)).max().unwrap_or(0);
        let call = pipe.cmd("EVALSHA").arg(self.script.get_hash()).arg(1).arg(self.key(aor));
        call.arg(expires).arg(self.channel()).arg(format!("{} {aor}", self.instance)).arg(deleted.len());
        for f in &deleted {
            call.arg(f);
        }
        for b in after {
            let json = serde_json::to_string(&record(b)).unwrap_or_default();
            call.arg(field(b)).arg(json);
        }
        call.ignore();
    }

    /// Reads `aors` from Redis (one round trip per batch) and applies each
    /// over the version read first.
    async fn fetch_all(&mut self, con: &mut MultiplexedConnection, aors: &[String]) -> Result<(), Lost> {
        for chunk in aors.chunks(BATCH) {
            let versions: Vec<u64> = chunk
                .iter()
                .map(|aor| sipline::registrar::Location::snapshot(&self.location, aor, Instant::now()).1)
                .collect();
            let mut pipe = redis::pipe();
            for aor in chunk {
                pipe.cmd("HGETALL").arg(self.key(aor));
            }
            let all: Vec<BTreeMap<String, String>> = timed(pipe.query_async(con)).await?;
            for ((aor, fields), version) in chunk.iter().zip(all).zip(versions) {
                if self.location.apply(aor, Some(version), parse(aor, fields)).is_err() {
                    // Changed here meanwhile: read again after ours is written.
                    self.refetch.insert(aor.clone());
                }
            }
        }
        Ok(())
    }

    /// Reads every AOR from Redis, and forgets AORs it no longer has.
    async fn resync(&mut self, con: &mut MultiplexedConnection) -> Result<(), Lost> {
        let pattern = format!("{}:loc:*", self.prefix);
        let strip = format!("{}:loc:", self.prefix);
        let mut seen = BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) =
                timed(redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(500).query_async(con))
                    .await?;
            let aors: Vec<String> = keys.iter().filter_map(|k| k.strip_prefix(&strip)).map(str::to_owned).collect();
            self.fetch_all(con, &aors).await?;
            seen.extend(aors);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        self.collect();
        for aor in self.location.aors() {
            if !seen.contains(&aor) && !self.pending.contains_key(&aor) {
                let (_, version) = sipline::registrar::Location::snapshot(&self.location, &aor, Instant::now());
                let _ = self.location.apply(&aor, Some(version), Vec::new());
            }
        }
        Ok(())
    }
}

/// The live bindings of `aor` in its Redis hash (malformed fields are
/// skipped and logged).
fn parse(aor: &str, fields: BTreeMap<String, String>) -> Vec<Binding> {
    let now = wall_ms(Instant::now());
    fields
        .into_values()
        .filter_map(|json| match serde_json::from_str::<Record>(&json) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(%aor, error = %e, "redis location store: a malformed binding skipped");
                None
            }
        })
        .filter(|r| r.expires > now)
        .map(|r| binding(aor, r))
        .collect()
}

/// `op`, failing if Redis takes longer than [`OP_TIMEOUT`].
async fn timed<T>(op: impl std::future::Future<Output = redis::RedisResult<T>>) -> redis::RedisResult<T> {
    match tokio::time::timeout(OP_TIMEOUT, op).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from((redis::ErrorKind::Io, "redis operation timed out"))),
    }
}
