//! Group commit, shared by the storage backends: one background task
//! takes every request waiting, writes them with one storage transaction
//! (one sync), and answers them all.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{CommitRecord, LogContents, LogError, LogFuture, LoggedParticipant};
use crate::{Payload, TransactionId};

/// Most requests written in one storage transaction.
const BATCH: usize = 4096;
/// How long end records alone wait for company before they are written.
const END_DELAY: Duration = Duration::from_millis(20);

/// What a backend does with a batch; called by one task at a time.
pub(super) trait Store: Send + 'static {
    /// Records `incarnation` and reads what the log holds.
    fn open(
        &mut self,
        incarnation: u64,
    ) -> impl Future<Output = Result<LogContents, LogError>> + Send;
    /// Writes `commits` and deletes `ends`, durably, in one transaction.
    fn write(
        &mut self,
        commits: &[&CommitRecord],
        ends: &[TransactionId],
    ) -> impl Future<Output = Result<(), LogError>> + Send;
    /// Closes the connection (the log's lock goes with it).
    fn close(self) -> impl Future<Output = ()> + Send;
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

    pub fn log_end(&self, txn: TransactionId) {
        // A closed log loses the end: recovery then delivers `commit` once
        // more, which participants accept.
        let _ = self.requests.send(Request::End(txn));
    }
}

async fn writer(
    mut store: impl Store,
    mut receiver: mpsc::UnboundedReceiver<Request>,
    location: Arc<str>,
) {
    let mut batch = Vec::new();
    while let Some(first) = receiver.recv().await {
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
        write(&mut store, &mut batch, &location).await;
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

/// Writes `batch`, answering and emptying it.
async fn write(store: &mut impl Store, batch: &mut Vec<Request>, location: &Arc<str>) {
    let mut commits = Vec::new();
    let mut ends = Vec::new();
    for request in batch.drain(..) {
        match request {
            Request::Open { incarnation, reply } => {
                let _ = reply.send(store.open(incarnation).await);
            }
            Request::Commit { record, reply } => commits.push((record, reply)),
            Request::End(txn) => ends.push(txn),
        }
    }
    if commits.is_empty() && ends.is_empty() {
        return;
    }
    let records: Vec<&CommitRecord> = commits.iter().map(|(record, _)| record).collect();
    let result = store.write(&records, &ends).await;
    match &result {
        Ok(()) if !ends.is_empty() => crate::failpoint::reach!(crate::failpoint::END_LOGGED),
        Ok(()) => {}
        Err(e) => {
            tracing::error!(log = %location, error = %e, decisions = commits.len(), "decision log write failed")
        }
    }
    for (_, reply) in commits {
        let _ = reply.send(result.clone());
    }
}

/// The participants of a record: a count, then per participant its key
/// and optional payload, each length-prefixed (u32, little endian).
pub(super) fn encode(participants: &[LoggedParticipant]) -> Vec<u8> {
    let mut out = Vec::new();
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
    out
}

/// Reads what [`encode`] wrote; a damaged record is an error, never
/// misread.
pub(super) fn decode(mut bytes: &[u8]) -> Result<Vec<LoggedParticipant>, String> {
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

/// A record read back: its id (16 bytes, big endian) and its participants.
pub(super) fn record(txn: &[u8], participants: &[u8]) -> Result<CommitRecord, LogError> {
    let txn = <[u8; 16]>::try_from(txn).map_err(|_| LogError::Corrupt {
        detail: format!("a transaction id of {} bytes", txn.len()),
    })?;
    let txn = TransactionId::from_u128(u128::from_be_bytes(txn));
    Ok(CommitRecord {
        txn,
        participants: decode(participants).map_err(|detail| LogError::Corrupt {
            detail: format!("transaction {txn}: {detail}"),
        })?,
    })
}

#[cfg(test)]
mod tests {
    use super::{decode, encode};
    use crate::log::LoggedParticipant;
    use crate::Payload;

    #[test]
    fn participants_round_trip_through_the_encoding() {
        let participants = vec![
            LoggedParticipant {
                key: "users".into(),
                payload: None,
            },
            LoggedParticipant {
                key: "http://inventory/dtxn".into(),
                payload: Some(Payload::from(r#"{"sku":"book"}"#)),
            },
        ];
        assert_eq!(decode(&encode(&participants)).unwrap(), participants);
    }

    #[test]
    fn damaged_encodings_are_refused_not_misread() {
        let good = encode(&[LoggedParticipant {
            key: "users".into(),
            payload: Some(Payload::from("x")),
        }]);
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut extra = good.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
        assert!(decode(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
