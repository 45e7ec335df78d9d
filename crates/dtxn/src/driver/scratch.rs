//! Buffers reused across steps on one thread: a step's actions and calls,
//! and a runner's pending calls and answers, which would otherwise be
//! allocated and freed for every phase of every transaction.
//!
//! A buffer is taken out of its thread's cell and given back empty; a
//! re-entrant use while it is out (a participant that calls back into the
//! coordinator when it is asked for its future) finds the cell empty and
//! allocates its own. Nothing but empty buffers is ever stored, so no user
//! value lives in a thread-local.

use std::cell::Cell;
use std::thread::LocalKey;

/// Buffers larger than this are freed rather than kept.
const KEEP_AT_MOST: usize = 256;

/// A buffer of `key`'s thread, empty.
pub(crate) fn take<T: 'static>(key: &'static LocalKey<Cell<Vec<T>>>) -> Vec<T> {
    key.try_with(Cell::take).unwrap_or_default()
}

/// Gives back a buffer, if it is empty and not too large.
pub(crate) fn give<T: 'static>(key: &'static LocalKey<Cell<Vec<T>>>, buffer: Vec<T>) {
    if buffer.is_empty() && buffer.capacity() <= KEEP_AT_MOST && buffer.capacity() > 0 {
        // The replaced buffer, if any, is empty too.
        let _ = key.try_with(|cell| cell.replace(buffer));
    }
}
