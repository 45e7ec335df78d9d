//! `steno` (Oxide's saga executor, 0.5): one saga of N parallel actions per
//! transaction, all run by one saga execution coordinator (SEC).

use std::fmt;
use std::sync::{Arc, OnceLock};

use dtxn::{Participant, PreparedResult};
use dtxn_bench::{IdPool, Peer, PeerSession};
use futures_util::future::BoxFuture;
use steno::{
    Action, ActionContext, ActionError, ActionFunc, ActionRegistry, Dag, DagBuilder,
    InMemorySecStore, Node, SagaDag, SagaId, SagaName, SagaType, SecClient,
};

/// Distinct transaction ids handed to the participants (they repeat after
/// this many transactions, as the floor's do).
const IDS: usize = 4096;

/// `steno`'s saga execution coordinator, with its in-memory store.
///
/// A saga is not two-phase commit: there is no vote and no atomic commit
/// point; each action does its step and, if a later one fails, is
/// compensated by its undo action. What is measured is one saga per
/// transaction, with one action per participant, all in parallel (as dtxn
/// calls its participants) and, with more than one, followed by a constant
/// node (a saga must end in one node), created and started through one SEC
/// shared by every driving task, and awaited to its end. The action calls its
/// participant's `prepare` and then `commit` (so the participants do the
/// same calls as under dtxn); its undo calls `rollback`. The action
/// registry and the DAG are built once per driving task (not timed); each
/// saga gets a fresh `SagaDag` carrying the transaction's key as its
/// parameters (timed, as a caller would build one per saga).
///
/// The SEC keeps every finished saga in memory (`InMemorySecStore`
/// persists nothing, but the SEC's own table does not shrink), so each
/// measurement starts from a [`fresh`](Peer::fresh) SEC.
pub struct Steno {
    ids: IdPool,
    /// Created on first use, inside the runtime (the SEC is a task).
    sec: OnceLock<Arc<SecClient>>,
}

impl Steno {
    /// The peer (its SEC is started on first use, which must be on a tokio
    /// runtime).
    pub fn new() -> Self {
        Self {
            ids: IdPool::new(IDS),
            sec: OnceLock::new(),
        }
    }

    fn sec(&self) -> Arc<SecClient> {
        Arc::clone(self.sec.get_or_init(|| {
            let log = slog::Logger::root(slog::Discard, slog::o!());
            Arc::new(steno::sec(log, Arc::new(InMemorySecStore::new())))
        }))
    }
}

impl Default for Steno {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Steno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Steno")
            .field("sec_started", &self.sec.get().is_some())
            .finish()
    }
}

/// The saga type: its context is the participants.
#[derive(Debug)]
struct BenchSaga;

impl SagaType for BenchSaga {
    type ExecContextType = SagaContext;
}

/// What every action of a driving task's sagas can reach.
struct SagaContext {
    participants: Arc<[Arc<dyn Participant>]>,
    ids: IdPool,
}

impl fmt::Debug for SagaContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaContext")
            .field("participants", &self.participants.len())
            .finish()
    }
}

/// The action for participant `index`: `prepare` then `commit`; undo:
/// `rollback`.
fn participant_action(index: usize) -> Arc<dyn Action<BenchSaga>> {
    ActionFunc::new_action(
        format!("participant-{index}"),
        move |ctx: ActionContext<BenchSaga>| async move {
            let key: u64 = ctx.saga_params()?;
            let context = ctx.user_data();
            let id = context.ids.get(key);
            let participant = &context.participants[index];
            if let PreparedResult::Aborted(reason) = participant.prepare(id).await {
                return Err(ActionError::action_failed(reason));
            }
            participant
                .commit(id)
                .await
                .map_err(|e| ActionError::action_failed(e.message().to_owned()))
        },
        move |ctx: ActionContext<BenchSaga>| async move {
            let key: u64 = ctx.saga_params()?;
            let context = ctx.user_data();
            let id = context.ids.get(key);
            context.participants[index]
                .rollback(id)
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message()))
        },
    )
}

impl Peer for Steno {
    fn name(&self) -> &'static str {
        "steno"
    }

    fn fresh(&self) -> Arc<dyn Peer> {
        Arc::new(Self {
            ids: self.ids.clone(),
            sec: OnceLock::new(),
        })
    }

    fn session(
        &self,
        participants: &Arc<[Arc<dyn Participant>]>,
    ) -> BoxFuture<'static, Box<dyn PeerSession>> {
        let sec = self.sec();
        let context = Arc::new(SagaContext {
            participants: Arc::clone(participants),
            ids: self.ids.clone(),
        });
        Box::pin(async move {
            let actions: Vec<Arc<dyn Action<BenchSaga>>> = (0..context.participants.len())
                .map(participant_action)
                .collect();
            let mut registry = ActionRegistry::new();
            for action in &actions {
                registry.register(Arc::clone(action));
            }
            let mut builder = DagBuilder::new(SagaName::new("dtxn-bench"));
            builder.append_parallel(
                actions
                    .iter()
                    .enumerate()
                    .map(|(i, action)| {
                        Node::action(format!("p{i}"), "participant", action.as_ref())
                    })
                    .collect(),
            );
            if actions.len() > 1 {
                // A saga must end in exactly one node (its output).
                builder.append(Node::constant("done", serde_json::Value::Null));
            }
            let dag = builder.build().expect("distinct nodes, ending in one");
            Box::new(SagaSession {
                sec,
                registry: Arc::new(registry),
                dag,
                context,
            }) as Box<dyn PeerSession>
        })
    }
}

/// One driving task's handle on the shared SEC.
struct SagaSession {
    sec: Arc<SecClient>,
    registry: Arc<ActionRegistry<BenchSaga>>,
    dag: Dag,
    context: Arc<SagaContext>,
}

impl PeerSession for SagaSession {
    fn cycle(&mut self, key: u64) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let dag = Arc::new(SagaDag::new(self.dag.clone(), serde_json::Value::from(key)));
            let id = SagaId::new_v4();
            let Ok(done) = self
                .sec
                .saga_create(
                    id,
                    Arc::clone(&self.context),
                    dag,
                    Arc::clone(&self.registry),
                )
                .await
            else {
                return false;
            };
            if self.sec.saga_start(id).await.is_err() {
                return false;
            }
            done.await.kind.is_ok()
        })
    }
}
