//! The bank workload: every participant is an [`Account`] holding an `i64`
//! balance in memory, and a transaction moves money between accounts
//! through two-phase commit.
//!
//! * The client first [`stage`](Account::stage)s each account's change
//!   (negative = debit, positive = credit; the changes of one transaction
//!   sum to zero) — the work done while the transaction is Active.
//! * `prepare`: a debit **reserves** the amount if the available balance
//!   (balance minus every reservation) covers it and votes `Ready`, else it
//!   drops the staged change and votes `Aborted("insufficient funds")`; a
//!   credit is held as pending and votes `Ready`; an account with no (or a
//!   zero) change votes `ReadOnly`.
//! * `commit` applies the held change to the balance, once per transaction
//!   (repeats are no-ops: apply is idempotent).
//! * `rollback` releases the reservation / pending credit and the staged
//!   change; it accepts transactions it never prepared.
//!
//! A held change still pending at the end of a run (a *hold*) means the
//! account never learnt the outcome; that is only acceptable where the
//! coordinator reported the account as a heuristic hazard.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use dtxn::{PreparedResult, TransactionId};

use crate::fault::{FaultCounts, FaultyParticipant, Resource};
use crate::lock;
use crate::trace::Trace;

#[derive(Debug, Default)]
struct Ledger {
    balance: i64,
    staged: HashMap<TransactionId, i64>,
    /// Prepared changes not yet applied or released (debits are negative).
    held: HashMap<TransactionId, i64>,
    applied: HashSet<TransactionId>,
}

/// One bank account: a [`Resource`] for [`FaultyParticipant`]. See the
/// [module docs](self).
#[derive(Debug, Default)]
pub struct Account {
    ledger: Mutex<Ledger>,
}

impl Account {
    /// An account holding `balance`.
    pub fn new(balance: i64) -> Self {
        Self {
            ledger: Mutex::new(Ledger {
                balance,
                ..Ledger::default()
            }),
        }
    }

    /// Stages this account's change in `txn` (before registering it).
    pub fn stage(&self, txn: TransactionId, delta: i64) {
        lock(&self.ledger).staged.insert(txn, delta);
    }

    /// The balance (applied changes only).
    pub fn balance(&self) -> i64 {
        lock(&self.ledger).balance
    }

    /// The balance minus every reserved debit: what a new debit may take.
    pub fn available(&self) -> i64 {
        let ledger = lock(&self.ledger);
        ledger.balance + ledger.held.values().filter(|d| **d < 0).sum::<i64>()
    }

    /// The change `txn` holds here (prepared, neither applied nor released).
    pub fn held(&self, txn: TransactionId) -> Option<i64> {
        lock(&self.ledger).held.get(&txn).copied()
    }

    /// Every held change, by transaction.
    pub fn holds(&self) -> Vec<(TransactionId, i64)> {
        let mut holds: Vec<_> = lock(&self.ledger)
            .held
            .iter()
            .map(|(t, d)| (*t, *d))
            .collect();
        holds.sort();
        holds
    }

    /// Whether `txn` was applied here.
    pub fn is_applied(&self, txn: TransactionId) -> bool {
        lock(&self.ledger).applied.contains(&txn)
    }

    /// Forgets the staged change and the applied marker of a checked `txn`
    /// (a hold, if any, stays: it is money in doubt).
    pub fn forget(&self, txn: TransactionId) {
        let mut ledger = lock(&self.ledger);
        ledger.staged.remove(&txn);
        ledger.applied.remove(&txn);
    }
}

impl Resource for Account {
    fn prepare(&self, txn: TransactionId) -> PreparedResult {
        let mut ledger = lock(&self.ledger);
        if ledger.held.contains_key(&txn) {
            return PreparedResult::Ready;
        }
        let delta = ledger.staged.remove(&txn).unwrap_or(0);
        if delta == 0 {
            return PreparedResult::ReadOnly;
        }
        let available = ledger.balance + ledger.held.values().filter(|d| **d < 0).sum::<i64>();
        if delta < 0 && available < -delta {
            return PreparedResult::Aborted(format!(
                "insufficient funds: {available} available, {} needed",
                -delta
            ));
        }
        ledger.held.insert(txn, delta);
        PreparedResult::Ready
    }

    fn commit(&self, txn: TransactionId) -> bool {
        let mut ledger = lock(&self.ledger);
        if ledger.applied.contains(&txn) {
            return false;
        }
        match ledger.held.remove(&txn) {
            Some(delta) => {
                ledger.balance += delta;
                ledger.applied.insert(txn);
                true
            }
            None => false,
        }
    }

    fn rollback(&self, txn: TransactionId) {
        let mut ledger = lock(&self.ledger);
        ledger.staged.remove(&txn);
        ledger.held.remove(&txn);
    }
}

/// A fault-injecting participant around an [`Account`].
pub type AccountParticipant = FaultyParticipant<Account>;

/// A set of accounts, each behind a [`FaultyParticipant`], named `acct0`,
/// `acct1`, … (which is also each one's
/// [recovery key](FaultyParticipant::with_recovery_key), so a coordinator
/// on a decision log can find them again after a restart).
#[derive(Debug)]
pub struct Bank {
    accounts: Vec<Arc<AccountParticipant>>,
    initial_total: i64,
}

impl Bank {
    /// Accounts with the given opening balances, logging to `trace` if any.
    pub fn new(balances: impl IntoIterator<Item = i64>, trace: Option<&Trace>) -> Self {
        let accounts: Vec<_> = balances
            .into_iter()
            .enumerate()
            .map(|(i, balance)| {
                let name = format!("acct{i}");
                let p = FaultyParticipant::new(name.clone(), Account::new(balance))
                    .with_recovery_key(name);
                Arc::new(match trace {
                    Some(trace) => p.with_trace(trace.clone()),
                    None => p,
                })
            })
            .collect();
        let initial_total = accounts.iter().map(|a| a.resource().balance()).sum();
        Self {
            accounts,
            initial_total,
        }
    }

    /// The accounts.
    pub fn accounts(&self) -> &[Arc<AccountParticipant>] {
        &self.accounts
    }

    /// Account `i`.
    pub fn account(&self, i: usize) -> &Arc<AccountParticipant> {
        &self.accounts[i]
    }

    /// The sum of the opening balances.
    pub fn initial_total(&self) -> i64 {
        self.initial_total
    }

    /// The sum of the current balances.
    pub fn total(&self) -> i64 {
        self.accounts.iter().map(|a| a.resource().balance()).sum()
    }

    /// The sum of every held change (debits negative), over all accounts.
    pub fn held_total(&self) -> i64 {
        self.accounts
            .iter()
            .flat_map(|a| a.resource().holds())
            .map(|(_, d)| d)
            .sum()
    }

    /// Faults fired on all accounts, by kind.
    pub fn faults_fired(&self) -> FaultCounts {
        let mut counts = FaultCounts::default();
        for a in &self.accounts {
            counts.add(&a.faults_fired());
        }
        counts
    }
}

/// A random transfer among `k` distinct accounts drawn from `0..accounts`
/// (`k` is clamped to `1..=accounts`): `(account, change)` pairs whose
/// changes sum to zero, each between `-max_amount` and `max_amount` except
/// the last, which balances the others. With `k == 1` the change is zero
/// (the account votes read-only).
pub fn random_transfer(
    rng: &mut fastrand::Rng,
    accounts: usize,
    k: usize,
    max_amount: i64,
) -> Vec<(usize, i64)> {
    let k = k.clamp(1, accounts.max(1));
    let mut picked: Vec<usize> = (0..accounts).collect();
    // A partial Fisher-Yates shuffle: the first k are a uniform sample.
    for i in 0..k {
        let j = rng.usize(i..accounts);
        picked.swap(i, j);
    }
    picked.truncate(k);
    let mut transfer: Vec<(usize, i64)> = picked
        .into_iter()
        .map(|i| (i, rng.i64(-max_amount..=max_amount)))
        .collect();
    let sum: i64 = transfer[..k - 1].iter().map(|(_, d)| d).sum();
    transfer[k - 1].1 = -sum;
    transfer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(n: u128) -> TransactionId {
        TransactionId::from_u128(n)
    }

    #[test]
    fn debit_reserves_in_prepare_and_applies_once_in_commit() {
        let a = Account::new(100);
        a.stage(txn(1), -30);
        assert_eq!(a.prepare(txn(1)), PreparedResult::Ready);
        assert_eq!(
            (a.balance(), a.available(), a.held(txn(1))),
            (100, 70, Some(-30))
        );
        assert!(a.commit(txn(1)));
        assert!(!a.commit(txn(1)), "apply is idempotent");
        assert_eq!((a.balance(), a.available(), a.held(txn(1))), (70, 70, None));
        assert!(a.is_applied(txn(1)));
    }

    #[test]
    fn debit_beyond_available_funds_votes_aborted_and_holds_nothing() {
        let a = Account::new(50);
        a.stage(txn(1), -40);
        a.stage(txn(2), -20);
        assert_eq!(a.prepare(txn(1)), PreparedResult::Ready);
        assert!(matches!(a.prepare(txn(2)), PreparedResult::Aborted(_)));
        assert_eq!(a.held(txn(2)), None);
        assert_eq!(a.available(), 10);
    }

    #[test]
    fn rollback_releases_and_a_later_commit_applies_nothing() {
        let a = Account::new(10);
        a.stage(txn(1), 5);
        assert_eq!(a.prepare(txn(1)), PreparedResult::Ready);
        a.rollback(txn(1));
        a.rollback(txn(1));
        assert!(!a.commit(txn(1)));
        assert_eq!((a.balance(), a.holds()), (10, vec![]));
    }

    #[test]
    fn unchanged_account_votes_read_only() {
        let a = Account::new(10);
        assert_eq!(a.prepare(txn(1)), PreparedResult::ReadOnly);
        a.stage(txn(2), 0);
        assert_eq!(a.prepare(txn(2)), PreparedResult::ReadOnly);
    }

    #[test]
    fn random_transfers_use_distinct_accounts_and_sum_to_zero() {
        let mut rng = fastrand::Rng::with_seed(7);
        for k in 1..=6 {
            let t = random_transfer(&mut rng, 6, k, 50);
            assert_eq!(t.len(), k);
            assert_eq!(t.iter().map(|(_, d)| d).sum::<i64>(), 0);
            let mut accounts: Vec<_> = t.iter().map(|(a, _)| *a).collect();
            accounts.sort_unstable();
            accounts.dedup();
            assert_eq!(accounts.len(), k);
        }
    }
}
