//! Group commit, shared by the storage backends: one background task
//! takes every request waiting, writes them with one storage transaction
//! (one sync), and answers them all.
//!
//! # Layout: one row per group commit
//!
//! The Commit decisions of one write go into one *segment*: a single row
//! (an id and a blob of the records, see [`encode_segment`]), so a write
//! costs the storage one insert however many decisions it carries, not
//! one per decision. The writer keeps an index of the segments in memory
//! (which records are still undelivered); an end record is not written
//! as such but applied to that index:
//!
//! * a segment whose every record ended is deleted;
//! * a segment with at most half of its stored records left is rewritten
//!   with only those;
//! * otherwise it stays as it is, ended records and all.
//!
//! So the log holds at most twice the records still being delivered, and
//! a recovery delivers `commit` again to at most that many (which
//! participants accept: they may always see a `commit` twice). Deletes and
//! rewrites ride along with the next write, or go alone after
//! [`END_DELAY`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{CommitRecord, LogContents, LogError, LogFuture, LoggedParticipant, Takeover};
use crate::{Payload, TransactionId};

/// Most requests written in one storage transaction.
const BATCH: usize = 4096;
/// How long end records alone wait for company before they are written.
const END_DELAY: Duration = Duration::from_millis(20);

/// What a backend stores: rows of an id and a blob. Called by one task at
/// a time.
pub(super) trait Store: Send + 'static {
    /// Records `incarnation` durably and reads every segment and
    /// incarnation the log holds.
    fn open(&mut self, incarnation: u64) -> impl Future<Output = Result<Stored, LogError>> + Send;
    /// Inserts or replaces the segments `put` and deletes the segments
    /// `delete`, durably, in one transaction.
    fn write(
        &mut self,
        put: &[(u64, &[u8])],
        delete: &[u64],
    ) -> impl Future<Output = Result<(), LogError>> + Send;
    /// Closes the connection (the log's lock goes with it).
    fn close(self) -> impl Future<Output = ()> + Send;
    /// How often the writer renews the store's lease when no write did
    /// (a shared log); `None` (the default): no lease.
    fn renew_every(&self) -> Option<Duration> {
        None
    }
    /// Renews the lease on its own (the writer was idle).
    fn renew(&mut self) -> impl Future<Output = Result<(), LogError>> + Send {
        std::future::ready(Ok(()))
    }
    /// Takes over one dead coordinator of a shared log, in one storage
    /// transaction: hands its segments to `adopt`, which answers the
    /// segment to store as this writer's (id and bytes) if any; stores it,
    /// deletes the dead one's, and fences it out. `Ok(None)` when no
    /// coordinator is to be taken over (the default).
    fn take_over<F>(
        &mut self,
        adopt: F,
    ) -> impl Future<Output = Result<Option<Taken>, LogError>> + Send
    where
        F: FnOnce(Vec<(u64, Vec<u8>)>) -> Result<Option<(u64, Vec<u8>)>, LogError> + Send,
    {
        let _ = adopt;
        std::future::ready(Ok(None))
    }
}

/// What [`Store::take_over`] took, besides the segment adopted.
pub(super) struct Taken {
    /// The coordinator taken over.
    pub node: String,
    /// Its incarnations.
    pub incarnations: Vec<u64>,
}

/// What a backend read when the log was opened.
pub(super) struct Stored {
    /// Every segment, by id.
    pub segments: Vec<(u64, Vec<u8>)>,
    /// Every incarnation that opened the log.
    pub incarnations: Vec<u64>,
}

#[derive(Debug)]
enum Request {
    Open {
        incarnation: u64,
        reply: oneshot::Sender<Result<LogContents, LogError>>,
    },
    Commit {
        record: CommitRecord,
        reply: oneshot::Sender<Result<(), LogError>>,
    },
    End(TransactionId),
    TakeOver {
        reply: oneshot::Sender<Result<Option<Takeover>, LogError>>,
    },
}

/// The front end of a backend: requests go to its writer task, which
/// stops (closing the store) once every clone is dropped.
#[derive(Debug, Clone)]
pub(super) struct GroupCommit {
    requests: mpsc::UnboundedSender<Request>,
}

impl GroupCommit {
    /// Starts the writer of `store` on the current tokio runtime.
    pub fn start(store: impl Store, location: Arc<str>) -> Self {
        let (requests, receiver) = mpsc::unbounded_channel();
        tokio::spawn(writer(store, receiver, location));
        Self { requests }
    }

    fn send<T: Send + 'static>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, LogError>>) -> Request,
    ) -> LogFuture<T> {
        let (reply, answer) = oneshot::channel();
        let sent = self.requests.send(request(reply)).is_ok();
        Box::pin(async move {
            if !sent {
                return Err(LogError::Closed);
            }
            answer.await.unwrap_or(Err(LogError::Closed))
        })
    }

    pub fn open(&self, incarnation: u64) -> LogFuture<LogContents> {
        self.send(|reply| Request::Open { incarnation, reply })
    }

    pub fn log_commit(&self, record: CommitRecord) -> LogFuture<()> {
        self.send(|reply| Request::Commit { record, reply })
    }

    pub fn take_over(&self) -> LogFuture<Option<Takeover>> {
        self.send(|reply| Request::TakeOver { reply })
    }

    pub fn log_end(&self, txn: TransactionId) {
        // A closed log loses the end: recovery then delivers `commit` once
        // more, which participants accept.
        let _ = self.requests.send(Request::End(txn));
    }
}

/// One stored segment, as the writer knows it.
struct Segment {
    /// The blob as stored (or as it will be once rewritten).
    bytes: Vec<u8>,
    /// Each record of `bytes`: its transaction, where it lies, and
    /// whether it is still undelivered.
    records: Vec<Slot>,
    /// Records still undelivered.
    live: usize,
}

struct Slot {
    txn: TransactionId,
    start: u32,
    end: u32,
    live: bool,
}

impl Segment {
    /// The segment in `bytes`, every record live.
    fn read(bytes: Vec<u8>) -> Result<Self, String> {
        let mut records = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let (txn, _, next) = record_at(&bytes, at)?;
            records.push(Slot {
                txn,
                start: offset(at)?,
                end: offset(next)?,
                live: true,
            });
            at = next;
        }
        Ok(Self {
            live: records.len(),
            bytes,
            records,
        })
    }

    /// The segment of `records`, encoded.
    fn write(records: &[&CommitRecord]) -> Result<Self, LogError> {
        let mut bytes = Vec::new();
        let mut slots = Vec::with_capacity(records.len());
        for record in records {
            let start = bytes.len();
            encode_record(record, &mut bytes);
            let too_large = |_| LogError::Backend {
                message: "a group commit of more than 4 GiB".to_owned(),
            };
            slots.push(Slot {
                txn: record.txn,
                start: offset(start).map_err(too_large)?,
                end: offset(bytes.len()).map_err(too_large)?,
                live: true,
            });
        }
        Ok(Self {
            live: slots.len(),
            bytes,
            records: slots,
        })
    }

    /// The segment with only its live records.
    fn compacted(&self) -> Self {
        let mut bytes = Vec::new();
        let mut records = Vec::with_capacity(self.live);
        for slot in self.records.iter().filter(|slot| slot.live) {
            let start = bytes.len();
            bytes.extend_from_slice(&self.bytes[slot.start as usize..slot.end as usize]);
            records.push(Slot {
                txn: slot.txn,
                // Smaller than the segment they come from.
                start: start as u32,
                end: bytes.len() as u32,
                live: true,
            });
        }
        Self {
            live: records.len(),
            bytes,
            records,
        }
    }
}

fn offset(n: usize) -> Result<u32, String> {
    u32::try_from(n).map_err(|_| format!("a segment of {n} bytes"))
}

/// The writer's view of the log: which segments hold which undelivered
/// records.
#[derive(Default)]
struct Index {
    segments: HashMap<u64, Segment>,
    /// Where each undelivered record is: its segment and slot.
    home: HashMap<TransactionId, (u64, usize)>,
    /// Segments with ended records, to delete or rewrite.
    dirty: BTreeSet<u64>,
    /// The id of the next segment (ids are never reused).
    next: u64,
}

impl Index {
    /// Builds the index from what was stored; returns the undelivered
    /// records in transaction id order. A transaction found in several
    /// segments (a write that failed after it landed, then written again)
    /// is kept in the first; the copies are dropped with the next write.
    fn load(&mut self, mut stored: Vec<(u64, Vec<u8>)>) -> Result<Vec<CommitRecord>, LogError> {
        *self = Self::default();
        stored.sort_unstable_by_key(|(id, _)| *id);
        let mut in_doubt = Vec::new();
        for (id, bytes) in stored {
            let mut segment = Segment::read(bytes).map_err(|detail| LogError::Corrupt {
                detail: format!("segment {id}: {detail}"),
            })?;
            for (i, slot) in segment.records.iter_mut().enumerate() {
                if self.home.contains_key(&slot.txn) {
                    slot.live = false;
                    segment.live -= 1;
                    self.dirty.insert(id);
                    continue;
                }
                self.home.insert(slot.txn, (id, i));
                let (_, participants, _) = record_at(&segment.bytes, slot.start as usize)
                    .map_err(|detail| LogError::Corrupt { detail })?;
                in_doubt.push(CommitRecord {
                    txn: slot.txn,
                    participants: decode(participants).map_err(|detail| LogError::Corrupt {
                        detail: format!("segment {id}, transaction {}: {detail}", slot.txn),
                    })?,
                });
            }
            if segment.live == 0 {
                self.dirty.insert(id);
            }
            self.segments.insert(id, segment);
            self.next = id + 1;
        }
        in_doubt.sort_unstable_by_key(|record| record.txn);
        Ok(in_doubt)
    }

    /// Adds a segment taken over from another coordinator.
    fn adopt(&mut self, id: u64, segment: Segment) {
        for (i, slot) in segment.records.iter().enumerate() {
            self.home.insert(slot.txn, (id, i));
        }
        self.segments.insert(id, segment);
    }

    /// Marks `txn`'s record delivered. An end for a record the index does
    /// not hold (never written, or ended already) changes nothing.
    fn end(&mut self, txn: TransactionId) {
        let Some((id, i)) = self.home.remove(&txn) else {
            return;
        };
        if let Some(segment) = self.segments.get_mut(&id) {
            if let Some(slot) = segment.records.get_mut(i).filter(|slot| slot.live) {
                slot.live = false;
                segment.live -= 1;
                self.dirty.insert(id);
            }
        }
    }

    /// What to do with the dirty segments: the ones to delete, and the
    /// ones to rewrite (compacted).
    fn cleanup(&self) -> (Vec<u64>, Vec<(u64, Segment)>) {
        let mut delete = Vec::new();
        let mut rewrite = Vec::new();
        for &id in &self.dirty {
            let Some(segment) = self.segments.get(&id) else {
                continue;
            };
            if segment.live == 0 {
                delete.push(id);
            } else if segment.live * 2 <= segment.records.len() {
                rewrite.push((id, segment.compacted()));
            }
        }
        (delete, rewrite)
    }

    /// Applies a write that succeeded.
    fn written(
        &mut self,
        new: Option<(u64, Segment)>,
        delete: &[u64],
        rewrite: Vec<(u64, Segment)>,
    ) {
        for id in delete {
            self.segments.remove(id);
        }
        for (id, segment) in rewrite {
            for (i, slot) in segment.records.iter().enumerate() {
                self.home.insert(slot.txn, (id, i));
            }
            self.segments.insert(id, segment);
        }
        // Whatever was dirty has been dealt with, or stays as it is until
        // more of it ends.
        self.dirty.clear();
        if let Some((id, segment)) = new {
            for (i, slot) in segment.records.iter().enumerate() {
                self.home.insert(slot.txn, (id, i));
            }
            self.segments.insert(id, segment);
        }
    }
}

async fn writer(
    mut store: impl Store,
    mut receiver: mpsc::UnboundedReceiver<Request>,
    location: Arc<str>,
) {
    let mut index = Index::default();
    let mut batch = Vec::new();
    let renew_every = store.renew_every();
    let mut renewed = tokio::time::Instant::now();
    loop {
        let first = if let Some(every) = renew_every.filter(|_| index.dirty.is_empty()) {
            // A shared log: an idle writer still renews its lease.
            match tokio::time::timeout_at(renewed + every, receiver.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    renewed = tokio::time::Instant::now();
                    if let Err(e) = store.renew().await {
                        tracing::warn!(log = %location, error = %e, "renewing the lease failed");
                    }
                    continue;
                }
            }
        } else if index.dirty.is_empty() {
            receiver.recv().await
        } else {
            // Deletes and rewrites left by a failed write are retried.
            match tokio::time::timeout(END_DELAY, receiver.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    write(&mut store, &mut index, &mut batch, &location).await;
                    continue;
                }
            }
        };
        let Some(first) = first else { break };
        batch.push(first);
        drain(&mut receiver, &mut batch);
        if batch.iter().all(|r| matches!(r, Request::End(_))) {
            // Ends alone are not urgent: wait for more, or a decision.
            let delay = tokio::time::sleep(END_DELAY);
            tokio::pin!(delay);
            while batch.len() < BATCH {
                tokio::select! {
                    () = &mut delay => break,
                    next = receiver.recv() => match next {
                        Some(request) => {
                            let urgent = !matches!(request, Request::End(_));
                            batch.push(request);
                            if urgent {
                                break;
                            }
                        }
                        None => break,
                    },
                }
            }
            drain(&mut receiver, &mut batch);
        }
        if renew_every.is_some() {
            // Every write renews the lease (a failed one retries soon).
            renewed = tokio::time::Instant::now();
        }
        write(&mut store, &mut index, &mut batch, &location).await;
    }
    store.close().await;
}

fn drain(receiver: &mut mpsc::UnboundedReceiver<Request>, batch: &mut Vec<Request>) {
    while batch.len() < BATCH {
        match receiver.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
}

/// Writes `batch` (possibly empty: then only what the index has to clean
/// up), answering and emptying it.
async fn write(
    store: &mut impl Store,
    index: &mut Index,
    batch: &mut Vec<Request>,
    location: &Arc<str>,
) {
    let mut commits = Vec::new();
    // Asked twice in this batch: answered with the first.
    let mut twice = Vec::new();
    let mut batched = HashSet::new();
    for request in batch.drain(..) {
        match request {
            Request::Open { incarnation, reply } => {
                let opened = store.open(incarnation).await.and_then(|stored| {
                    let in_doubt = index.load(stored.segments)?;
                    Ok(LogContents::new(in_doubt, stored.incarnations))
                });
                let _ = reply.send(opened);
            }
            Request::Commit { record, reply } => {
                if index.home.contains_key(&record.txn) {
                    // Durable already (a decision logged twice).
                    let _ = reply.send(Ok(()));
                } else if batched.insert(record.txn) {
                    commits.push((record, reply));
                } else {
                    twice.push(reply);
                }
            }
            Request::End(txn) => index.end(txn),
            Request::TakeOver { reply } => {
                let _ = reply.send(take_over(store, index).await);
            }
        }
    }
    let (delete, rewrite) = index.cleanup();
    if commits.is_empty() && delete.is_empty() && rewrite.is_empty() {
        index.dirty.clear();
        return;
    }
    let records: Vec<&CommitRecord> = commits.iter().map(|(record, _)| record).collect();
    let new = match (!records.is_empty())
        .then(|| Segment::write(&records))
        .transpose()
    {
        Ok(new) => new.map(|segment| (index.next, segment)),
        Err(e) => {
            for reply in commits.into_iter().map(|(_, reply)| reply).chain(twice) {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
    };
    if new.is_some() {
        index.next += 1;
    }
    let put: Vec<(u64, &[u8])> = new
        .iter()
        .chain(&rewrite)
        .map(|(id, segment)| (*id, &segment.bytes[..]))
        .collect();
    let result = store.write(&put, &delete).await;
    drop(put);
    match &result {
        Ok(()) => {
            if !delete.is_empty() || !rewrite.is_empty() {
                crate::failpoint::reach!(crate::failpoint::END_LOGGED);
            }
            index.written(new, &delete, rewrite);
        }
        Err(e) => {
            tracing::error!(log = %location, error = %e, decisions = commits.len(), "decision log write failed");
        }
    }
    for reply in commits.into_iter().map(|(_, reply)| reply).chain(twice) {
        let _ = reply.send(result.clone());
    }
}

/// Takes over one dead coordinator of a shared log: its records become
/// one new segment of this writer's.
async fn take_over(
    store: &mut impl Store,
    index: &mut Index,
) -> Result<Option<Takeover>, LogError> {
    let id = index.next;
    let mut adopted = None;
    let taken = store
        .take_over(|segments| {
            let mut theirs = Index::default();
            let records: Vec<CommitRecord> = theirs
                .load(segments)?
                .into_iter()
                .filter(|record| !index.home.contains_key(&record.txn))
                .collect();
            if records.is_empty() {
                adopted = Some((None, records));
                return Ok(None);
            }
            let segment = Segment::write(&records.iter().collect::<Vec<_>>())?;
            let bytes = segment.bytes.clone();
            adopted = Some((Some(segment), records));
            Ok(Some((id, bytes)))
        })
        .await?;
    let Some(taken) = taken else {
        return Ok(None);
    };
    let (segment, in_doubt) = adopted.unwrap_or_default();
    if let Some(segment) = segment {
        index.next = id + 1;
        index.adopt(id, segment);
    }
    Ok(Some(Takeover::new(
        taken.node,
        in_doubt,
        taken.incarnations,
    )))
}

/// Appends `record` to a segment: the length of what follows (u32, little
/// endian), the transaction id (16 bytes, big endian), and its
/// participants ([`encode`]).
fn encode_record(record: &CommitRecord, out: &mut Vec<u8>) {
    let at = out.len();
    out.extend([0; 4]);
    out.extend(record.txn.as_u128().to_be_bytes());
    encode(&record.participants, out);
    let len = u32::try_from(out.len() - at - 4).unwrap_or(u32::MAX);
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// The record at `at` in a segment: its transaction, its participants'
/// encoding, and where the next record starts.
fn record_at(bytes: &[u8], at: usize) -> Result<(TransactionId, &[u8], usize), String> {
    let rest = &bytes[at..];
    let Some((len, rest)) = rest.split_first_chunk::<4>() else {
        return Err(format!("a record cut short at byte {at}"));
    };
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len || len < 16 {
        return Err(format!(
            "a record of {len} bytes at byte {at}, {} bytes left",
            rest.len()
        ));
    }
    let (txn, participants) = rest[..len].split_at(16);
    let txn = TransactionId::from_u128(u128::from_be_bytes(
        txn.try_into()
            .map_err(|_| "a short transaction id".to_owned())?,
    ));
    Ok((txn, participants, at + 4 + len))
}

/// The participants of a record: a count, then per participant its key
/// and optional payload, each length-prefixed (u32, little endian).
fn encode(participants: &[LoggedParticipant], out: &mut Vec<u8>) {
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    out.extend(len(participants.len()));
    for p in participants {
        out.extend(len(p.key.len()));
        out.extend(p.key.as_bytes());
        match &p.payload {
            None => out.push(0),
            Some(payload) => {
                out.push(1);
                out.extend(len(payload.len()));
                out.extend(payload.as_bytes());
            }
        }
    }
}

/// Reads what [`encode`] wrote; a damaged record is an error, never
/// misread.
fn decode(mut bytes: &[u8]) -> Result<Vec<LoggedParticipant>, String> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if bytes.len() < n {
            return Err(format!(
                "truncated: {} bytes left, {n} expected",
                bytes.len()
            ));
        }
        let (head, tail) = bytes.split_at(n);
        *bytes = tail;
        Ok(head)
    }
    fn len(bytes: &mut &[u8]) -> Result<usize, String> {
        let raw = take(bytes, 4)?;
        let n = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        usize::try_from(n).map_err(|_| format!("length {n} too large"))
    }
    let count = len(&mut bytes)?;
    // Each participant takes at least five bytes: no huge allocation for
    // a damaged count.
    if count > bytes.len() / 5 {
        return Err(format!("{count} participants in {} bytes", bytes.len()));
    }
    let mut participants = Vec::with_capacity(count);
    for _ in 0..count {
        let key_len = len(&mut bytes)?;
        let key = std::str::from_utf8(take(&mut bytes, key_len)?)
            .map_err(|_| "a recovery key that is not UTF-8".to_owned())?;
        let payload = match take(&mut bytes, 1)?[0] {
            0 => None,
            1 => {
                let n = len(&mut bytes)?;
                Some(Payload::from(take(&mut bytes, n)?))
            }
            other => return Err(format!("payload marker {other}")),
        };
        participants.push(LoggedParticipant {
            key: key.into(),
            payload,
        });
    }
    if !bytes.is_empty() {
        return Err(format!("{} bytes after the last participant", bytes.len()));
    }
    Ok(participants)
}

/// A segment holding the records of an older layout (a row per decision:
/// its id, 16 bytes big endian, and its participants' encoding), for a
/// backend's upgrade of a format-1 log.
pub(super) fn segment_of_rows(
    rows: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
) -> Result<Vec<u8>, LogError> {
    let mut bytes = Vec::new();
    for (txn, participants) in rows {
        let txn = <[u8; 16]>::try_from(&txn[..]).map_err(|_| LogError::Corrupt {
            detail: format!("a transaction id of {} bytes", txn.len()),
        })?;
        let txn = TransactionId::from_u128(u128::from_be_bytes(txn));
        let participants = decode(&participants).map_err(|detail| LogError::Corrupt {
            detail: format!("transaction {txn}: {detail}"),
        })?;
        encode_record(&CommitRecord { txn, participants }, &mut bytes);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::{decode, encode, encode_record, Index, Segment};
    use crate::log::{CommitRecord, LoggedParticipant};
    use crate::{Payload, TransactionId};

    fn record(n: u128) -> CommitRecord {
        CommitRecord {
            txn: TransactionId::from_u128(n),
            participants: vec![
                LoggedParticipant {
                    key: "users".into(),
                    payload: None,
                },
                LoggedParticipant {
                    key: "http://inventory/dtxn".into(),
                    payload: Some(Payload::from(r#"{"sku":"book"}"#)),
                },
            ],
        }
    }

    #[test]
    fn participants_round_trip_through_the_encoding() {
        let participants = record(1).participants;
        let mut bytes = Vec::new();
        encode(&participants, &mut bytes);
        assert_eq!(decode(&bytes).unwrap(), participants);
    }

    #[test]
    fn damaged_encodings_are_refused_not_misread() {
        let mut good = Vec::new();
        encode(
            &[LoggedParticipant {
                key: "users".into(),
                payload: Some(Payload::from("x")),
            }],
            &mut good,
        );
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut extra = good.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
        assert!(decode(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn a_cut_or_damaged_segment_is_refused() {
        let mut bytes = Vec::new();
        encode_record(&record(1), &mut bytes);
        let boundary = bytes.len();
        encode_record(&record(2), &mut bytes);
        assert_eq!(Segment::read(bytes.clone()).unwrap().records.len(), 2);
        for cut in 1..bytes.len() {
            let loaded = Index::default().load(vec![(0, bytes[..cut].to_vec())]);
            if cut == boundary {
                // Whole records: the storage's own atomicity is what keeps
                // a row from being cut there.
                assert_eq!(loaded.unwrap(), [record(1)]);
            } else {
                assert!(loaded.is_err(), "cut at {cut}: {loaded:?}");
            }
        }
        // A damaged length is caught too.
        let mut damaged = bytes.clone();
        damaged[boundary] ^= 0x40;
        assert!(Index::default().load(vec![(0, damaged)]).is_err());
    }

    /// Segment 0 holds 1..=4, segment 1 holds 5; ends of 1, 2 leave
    /// segment 0 half live (rewritten); ending 5 empties segment 1
    /// (deleted); 3 alone ending leaves segment 0 as it is.
    #[test]
    fn ended_segments_are_deleted_and_half_ended_ones_rewritten() {
        let mut index = Index::default();
        let first: Vec<CommitRecord> = (1..=4).map(record).collect();
        let first = Segment::write(&first.iter().collect::<Vec<_>>()).unwrap();
        let second = Segment::write(&[&record(5)]).unwrap();
        index.written(Some((0, first)), &[], Vec::new());
        index.written(Some((1, second)), &[], Vec::new());

        index.end(TransactionId::from_u128(1));
        let (delete, rewrite) = index.cleanup();
        assert!(delete.is_empty() && rewrite.is_empty(), "3 of 4 live");
        index.written(None, &delete, rewrite);

        index.end(TransactionId::from_u128(2));
        index.end(TransactionId::from_u128(5));
        index.end(TransactionId::from_u128(99)); // unknown: ignored
        let (delete, rewrite) = index.cleanup();
        assert_eq!(delete, [1]);
        assert_eq!(rewrite.len(), 1);
        let (id, compacted) = &rewrite[0];
        assert_eq!(*id, 0);
        let kept: Vec<u128> = compacted.records.iter().map(|s| s.txn.as_u128()).collect();
        assert_eq!(kept, [3, 4]);
        index.written(None, &delete, rewrite);

        // What a restart would read: the rewritten segment alone.
        let stored = vec![(0, index.segments[&0].bytes.clone())];
        let in_doubt = Index::default().load(stored).unwrap();
        assert_eq!(in_doubt, [record(3), record(4)]);
    }

    #[test]
    fn a_decision_found_twice_is_read_once_and_its_copy_dropped() {
        let a = Segment::write(&[&record(1), &record(2)]).unwrap();
        let b = Segment::write(&[&record(2)]).unwrap();
        let mut index = Index::default();
        let in_doubt = index.load(vec![(7, b.bytes), (3, a.bytes)]).unwrap();
        assert_eq!(in_doubt, [record(1), record(2)]);
        assert_eq!(index.next, 8);
        let (delete, rewrite) = index.cleanup();
        assert_eq!(delete, [7], "the later copy goes");
        assert!(rewrite.is_empty());
    }
}
