//! The test suite every [`Ledger`] must pass, run against the redb and the
//! PostgreSQL ledger. Build the ledger under test with [`RejectKind`] as
//! its Apply hook, on fresh storage, and call [`run`].

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;

use pdc_sync::{Entry, ItemResult, OutboxItem, Priority, Scope, StoreId, StreamKey, View};

use super::{Ledger, StoredRecord, STORAGE_REJECTION};
use crate::apply::{Accepted, Apply, Refusals, Rejection};
use crate::ServerError;

/// The hook the suite expects: rejects items of kind [`REJECTED_KIND`]
/// with code `refused`, accepts the rest; writing the effects of an item
/// of kind [`POISON_KIND`] fails (on PostgreSQL with a real statement
/// error, division by zero, SQLSTATE 22012).
#[derive(Debug, Clone, Copy, Default)]
pub struct RejectKind;

/// Kind refused by [`RejectKind`].
pub const REJECTED_KIND: u16 = 99;

/// Kind whose effects [`RejectKind`] cannot write.
pub const POISON_KIND: u16 = 98;

#[async_trait::async_trait]
impl Apply for RejectKind {
    fn check(&self, _terminal_id: &str, item: &OutboxItem) -> Result<(), Rejection> {
        if item.kind == REJECTED_KIND {
            Err(Rejection::new("refused", format!("item {}", item.local_id)))
        } else {
            Ok(())
        }
    }

    fn apply_redb(
        &self,
        _tx: &redb::WriteTransaction,
        items: &[Accepted<'_>],
    ) -> Result<Refusals, ServerError> {
        match items.iter().find(|a| a.item.kind == POISON_KIND) {
            Some(a) => Err(ServerError::Apply(format!(
                "cannot store item {}",
                a.item.local_id
            ))),
            None => Ok(Vec::new()),
        }
    }

    async fn apply_postgres(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        items: &[Accepted<'_>],
    ) -> Result<Refusals, ServerError> {
        let poisoned = items.iter().filter(|a| a.item.kind == POISON_KIND).count() as i32;
        // 1 / 0 for a poisoned batch: a data error of the statement.
        tx.query_one("SELECT 1 / (1 - least($1::int, 1))", &[&poisoned])
            .await?;
        Ok(Vec::new())
    }
}

/// The store id the suite pushes from (other checks use others).
pub const S: StoreId = StoreId([1; 16]);

/// An item with this local id and kind.
pub fn item(local_id: u64, kind: u16) -> OutboxItem {
    OutboxItem {
        local_id,
        stream: StreamKey(local_id % 3),
        priority: Priority::High,
        kind,
        created_at_ms: 1_700_000_000_000 + local_id,
        payload: local_id.to_le_bytes().to_vec(),
    }
}

fn seq(r: &ItemResult) -> Option<u64> {
    match r {
        ItemResult::Applied { server_seq } | ItemResult::Duplicate { server_seq } => {
            Some(*server_seq)
        }
        _ => None,
    }
}

/// Runs every check; each uses its own terminal ids, so one fresh ledger
/// serves the whole suite.
pub async fn run(ledger: Arc<dyn Ledger>) {
    exactly_once(&*ledger).await;
    rejections_are_remembered(&*ledger).await;
    store_replacement(&*ledger).await;
    conflicting_resend(&*ledger).await;
    poison_item_in_a_batch_of_50(&*ledger).await;
    poison_job_among_concurrent_batches(Arc::clone(&ledger)).await;
    ids_at_the_i64_edges(&*ledger).await;
    concurrent_resends_apply_once(Arc::clone(&ledger)).await;
    terminals(&*ledger).await;
    datasets(&*ledger).await;
    terminal_views(&*ledger).await;
    purge(&*ledger).await;
}

/// New items are applied with increasing sequences in request order; a
/// resend is answered with the original sequences; a mixed batch with both.
pub async fn exactly_once(ledger: &dyn Ledger) {
    let batch: Vec<_> = (1..=50).map(|i| item(i, 2)).collect();
    let first = ledger
        .push("conf-a", S, batch.clone(), 1_000)
        .await
        .unwrap();
    assert_eq!(first.len(), 50);
    let seqs: Vec<u64> = first
        .iter()
        .map(|r| match r {
            ItemResult::Applied { server_seq } => *server_seq,
            other => panic!("expected applied, got {other:?}"),
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let status = ledger.status("conf-a", S, &[1, 50, 51]).await.unwrap();
    assert_eq!(
        status,
        vec![
            Some(ItemResult::Duplicate {
                server_seq: seqs[0]
            }),
            Some(ItemResult::Duplicate {
                server_seq: seqs[49]
            }),
            None
        ]
    );
    let again = ledger.push("conf-a", S, batch, 2_000).await.unwrap();
    for (r, s) in again.iter().zip(&seqs) {
        assert_eq!(*r, ItemResult::Duplicate { server_seq: *s });
    }
    // The same local ids from another terminal are other items.
    let other = ledger
        .push("conf-b", S, vec![item(1, 2)], 1_000)
        .await
        .unwrap();
    assert!(matches!(other[0], ItemResult::Applied { .. }));
    let mixed = ledger
        .push("conf-a", S, vec![item(50, 2), item(51, 2)], 3_000)
        .await
        .unwrap();
    assert_eq!(
        mixed[0],
        ItemResult::Duplicate {
            server_seq: seqs[49]
        }
    );
    assert!(matches!(mixed[1], ItemResult::Applied { server_seq } if server_seq > seqs[49]));
    // A local id twice in one batch: new once, then a duplicate.
    let twice = ledger
        .push("conf-a", S, vec![item(60, 2), item(60, 2)], 3_000)
        .await
        .unwrap();
    assert!(matches!(twice[0], ItemResult::Applied { .. }));
    assert_eq!(
        twice[1],
        ItemResult::Duplicate {
            server_seq: seq(&twice[0]).unwrap()
        }
    );
    assert!(ledger
        .push("conf-a", S, vec![], 0)
        .await
        .unwrap()
        .is_empty());
}

/// A rejected item is answered rejected again on a resend, and counted.
pub async fn rejections_are_remembered(ledger: &dyn Ledger) {
    let before = ledger.totals().await.unwrap();
    let r = ledger
        .push(
            "conf-r",
            S,
            vec![item(1, 2), item(2, REJECTED_KIND), item(3, 2)],
            0,
        )
        .await
        .unwrap();
    assert!(matches!(r[0], ItemResult::Applied { .. }));
    assert!(matches!(&r[1], ItemResult::Rejected { code, .. } if code == "refused"));
    assert!(matches!(r[2], ItemResult::Applied { .. }));
    let again = ledger
        .push("conf-r", S, vec![item(2, REJECTED_KIND)], 0)
        .await
        .unwrap();
    assert_eq!(again[0], r[1]);
    let status = ledger.status("conf-r", S, &[2, 4]).await.unwrap();
    assert_eq!(status, vec![Some(r[1].clone()), None]);
    let after = ledger.totals().await.unwrap();
    assert_eq!(after.applied, before.applied + 2);
    assert_eq!(after.rejected, before.rejected + 1);
    // What the ledger holds for the terminal, oldest first, and the last
    // `limit` of it.
    let held = ledger.terminal_items("conf-r", 10).await.unwrap();
    let ids: Vec<u64> = held.iter().map(|i| i.local_id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(held[0].result, r[0]);
    assert_eq!(held[1].result, r[1]);
    assert!(held.iter().all(|i| i.store == S));
    let last = ledger.terminal_items("conf-r", 2).await.unwrap();
    assert_eq!(last.iter().map(|i| i.local_id).collect::<Vec<_>>(), [2, 3]);
    assert!(ledger
        .terminal_items("conf-nobody", 10)
        .await
        .unwrap()
        .is_empty());
}

/// A replaced store (new store id, local ids from 1 again) never collides
/// with the old one; the ledger lists a terminal's stores.
pub async fn store_replacement(ledger: &dyn Ledger) {
    let old = StoreId([2; 16]);
    let new = StoreId([3; 16]);
    assert!(ledger.note_store("conf-s", old, 10).await.unwrap());
    assert!(!ledger.note_store("conf-s", old, 11).await.unwrap());
    let batch: Vec<_> = (1..=5).map(|i| item(i, 2)).collect();
    let first = ledger.push("conf-s", old, batch, 10).await.unwrap();
    assert!(ledger.note_store("conf-s", new, 20).await.unwrap());
    let mut replaced: Vec<_> = (1..=5).map(|i| item(i, 2)).collect();
    for i in &mut replaced {
        i.payload.push(1); // other sales, same local ids
    }
    let second = ledger.push("conf-s", new, replaced, 20).await.unwrap();
    for (a, b) in first.iter().zip(&second) {
        let (ItemResult::Applied { server_seq: x }, ItemResult::Applied { server_seq: y }) = (a, b)
        else {
            panic!("both stores' items are new: {a:?} {b:?}");
        };
        assert_ne!(x, y);
    }
    let status = ledger.status("conf-s", old, &[1]).await.unwrap();
    assert_eq!(
        status[0],
        Some(ItemResult::Duplicate {
            server_seq: seq(&first[0]).unwrap()
        })
    );
    let stores = ledger.terminal_stores("conf-s").await.unwrap();
    let ids: Vec<StoreId> = stores.iter().map(|s| s.store_id).collect();
    assert_eq!(ids, vec![old, new]);
    assert_eq!(stores[0].first_seen_ms, 10);
    assert!(ledger
        .terminal_stores("conf-none")
        .await
        .unwrap()
        .is_empty());
}

/// A resend whose payload differs is a conflict, for an applied and for a
/// rejected item; the same payload is still a duplicate.
pub async fn conflicting_resend(ledger: &dyn Ledger) {
    let r = ledger
        .push("conf-x", S, vec![item(1, 2), item(2, REJECTED_KIND)], 0)
        .await
        .unwrap();
    let mut changed = vec![item(1, 2), item(2, REJECTED_KIND)];
    for i in &mut changed {
        i.payload[0] ^= 0xff;
    }
    let again = ledger.push("conf-x", S, changed, 0).await.unwrap();
    assert!(matches!(again[0], ItemResult::Conflict { .. }), "{again:?}");
    assert!(matches!(again[1], ItemResult::Conflict { .. }), "{again:?}");
    let same = ledger
        .push("conf-x", S, vec![item(1, 2), item(2, REJECTED_KIND)], 0)
        .await
        .unwrap();
    assert_eq!(
        same,
        vec![
            ItemResult::Duplicate {
                server_seq: seq(&r[0]).unwrap()
            },
            r[1].clone()
        ]
    );
}

/// One item whose effects the database cannot write, in a batch of 50:
/// 49 applied and 1 rejected `storage`, in one call; a resend gets the
/// same answers.
pub async fn poison_item_in_a_batch_of_50(ledger: &dyn Ledger) {
    let before = ledger.totals().await.unwrap();
    let batch: Vec<_> = (1..=50)
        .map(|i| item(i, if i == 18 { POISON_KIND } else { 2 }))
        .collect();
    let r = ledger
        .push("conf-poison", S, batch.clone(), 0)
        .await
        .unwrap();
    for (n, res) in r.iter().enumerate() {
        if n == 17 {
            assert!(
                matches!(res, ItemResult::Rejected { code, .. } if code == STORAGE_REJECTION),
                "{res:?}"
            );
        } else {
            assert!(
                matches!(res, ItemResult::Applied { .. }),
                "item {n}: {res:?}"
            );
        }
    }
    let seqs: Vec<u64> = r.iter().filter_map(seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    let after = ledger.totals().await.unwrap();
    assert_eq!(after.applied, before.applied + 49);
    assert_eq!(after.rejected, before.rejected + 1);
    let again = ledger.push("conf-poison", S, batch, 0).await.unwrap();
    for (a, b) in r.iter().zip(&again) {
        match a {
            ItemResult::Applied { server_seq } => {
                assert_eq!(
                    *b,
                    ItemResult::Duplicate {
                        server_seq: *server_seq
                    }
                )
            }
            other => assert_eq!(b, other),
        }
    }
}

/// Many batches at once (a group commit on the embedded ledger), one of
/// them with a poison item: it fails alone.
pub async fn poison_job_among_concurrent_batches(ledger: Arc<dyn Ledger>) {
    let tasks: Vec<_> = (0..24u64)
        .map(|t| {
            let l = Arc::clone(&ledger);
            tokio::spawn(async move {
                let kind = if t == 5 { POISON_KIND } else { 2 };
                let batch = vec![item(1, 2), item(2, kind)];
                loop {
                    match l.push(&format!("conf-g{t}"), S, batch.clone(), 0).await {
                        Ok(r) => return (t, r),
                        Err(ServerError::Unavailable(_)) => {
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let (t, r) = task.await.unwrap();
        assert!(
            matches!(r[0], ItemResult::Applied { .. }),
            "conf-g{t}: {r:?}"
        );
        if t == 5 {
            assert!(
                matches!(&r[1], ItemResult::Rejected { code, .. } if code == STORAGE_REJECTION)
            );
        } else {
            assert!(
                matches!(r[1], ItemResult::Applied { .. }),
                "conf-g{t}: {r:?}"
            );
        }
    }
}

/// Integers at the edges: 2^63−1 is stored and read back exactly; 2^63
/// and above is refused with an error naming the field, and nothing of
/// the batch is kept.
pub async fn ids_at_the_i64_edges(ledger: &dyn Ledger) {
    let max = i64::MAX as u64;
    let mut edge = item(max, 2);
    edge.stream = StreamKey(max);
    edge.created_at_ms = max;
    let r = ledger
        .push("conf-edge", S, vec![edge.clone()], 0)
        .await
        .unwrap();
    let ItemResult::Applied { server_seq } = r[0] else {
        panic!("{r:?}")
    };
    assert_eq!(
        ledger.status("conf-edge", S, &[max]).await.unwrap()[0],
        Some(ItemResult::Duplicate { server_seq })
    );
    let before = ledger.totals().await.unwrap();
    for field in ["local_id", "stream", "created_at_ms"] {
        let mut wide = item(7, 2);
        match field {
            "local_id" => wide.local_id = max + 1,
            "stream" => wide.stream = StreamKey(u64::MAX),
            _ => wide.created_at_ms = max + 1,
        }
        let e = ledger
            .push("conf-edge", S, vec![item(6, 2), wide], 0)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ServerError::InvalidItem(m) if m.contains(field)),
            "{field}: {e}"
        );
    }
    assert_eq!(ledger.totals().await.unwrap(), before, "nothing kept");
    assert_eq!(ledger.status("conf-edge", S, &[6]).await.unwrap()[0], None);
}

/// The same batch pushed by 8 tasks at once: every item applied exactly
/// once, every other answer a duplicate with the same sequence.
pub async fn concurrent_resends_apply_once(ledger: Arc<dyn Ledger>) {
    let before = ledger.totals().await.unwrap();
    let batch: Vec<_> = (1..=40).map(|i| item(i, 2)).collect();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let l = Arc::clone(&ledger);
            let b = batch.clone();
            tokio::spawn(async move {
                loop {
                    match l.push("conf-c", S, b.clone(), 0).await {
                        Ok(r) => return r,
                        // A busy ledger may ask to retry; that is allowed.
                        Err(ServerError::Unavailable(_)) => {
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    let mut applied: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut seqs: HashMap<u64, u64> = HashMap::new();
    for t in tasks {
        let results = t.await.unwrap();
        for (it, r) in batch.iter().zip(&results) {
            let s = seq(r).unwrap();
            assert_eq!(
                *seqs.entry(it.local_id).or_insert(s),
                s,
                "one sequence per item"
            );
            if matches!(r, ItemResult::Applied { .. }) {
                applied.entry(it.local_id).or_default().push(s);
            }
        }
    }
    assert_eq!(applied.len(), 40);
    assert!(applied.values().all(|v| v.len() == 1));
    assert_eq!(ledger.totals().await.unwrap().applied, before.applied + 40);
}

/// Terminals: add, refuse a second add, find by token, revoke.
pub async fn terminals(ledger: &dyn Ledger) {
    let tok = [7u8; 32];
    ledger.add_terminal("conf-t1", &tok, 42).await.unwrap();
    assert!(matches!(
        ledger.add_terminal("conf-t1", &[8u8; 32], 43).await,
        Err(ServerError::TerminalExists(_))
    ));
    ledger
        .add_terminal("conf-t2", &[9u8; 32], 44)
        .await
        .unwrap();
    assert_eq!(
        ledger.terminal_for_token(&tok).await.unwrap().as_deref(),
        Some("conf-t1")
    );
    assert_eq!(ledger.terminal_for_token(&[1u8; 32]).await.unwrap(), None);
    let list = ledger.terminals().await.unwrap();
    let t1 = list.iter().find(|t| t.terminal_id == "conf-t1").unwrap();
    assert_eq!((t1.created_at_ms, t1.revoked), (42, false));
    assert!(ledger.revoke_terminal("conf-t1").await.unwrap());
    assert!(!ledger.revoke_terminal("conf-none").await.unwrap());
    assert_eq!(ledger.terminal_for_token(&tok).await.unwrap(), None);
    let list = ledger.terminals().await.unwrap();
    assert!(list.iter().any(|t| t.terminal_id == "conf-t1" && t.revoked));
    // Rotation: a new token works (the revoked terminal is active again),
    // the old one does not; an unknown terminal is `false`.
    assert!(ledger.rotate_terminal("conf-t1", &[6u8; 32]).await.unwrap());
    assert_eq!(
        ledger
            .terminal_for_token(&[6u8; 32])
            .await
            .unwrap()
            .as_deref(),
        Some("conf-t1")
    );
    assert_eq!(ledger.terminal_for_token(&tok).await.unwrap(), None);
    assert!(ledger.rotate_terminal("conf-t1", &[5u8; 32]).await.unwrap());
    assert_eq!(ledger.terminal_for_token(&[6u8; 32]).await.unwrap(), None);
    assert!(!ledger
        .rotate_terminal("conf-none", &[4u8; 32])
        .await
        .unwrap());
    let list = ledger.terminals().await.unwrap();
    assert!(list
        .iter()
        .any(|t| t.terminal_id == "conf-t1" && !t.revoked));
    assert_eq!(
        ledger
            .terminal_for_token(&[9u8; 32])
            .await
            .unwrap()
            .as_deref(),
        Some("conf-t2")
    );
}

/// Datasets: stored changes of every layer, tombstones and hidden ids
/// come back with their versions; versions advance by compare-and-set.
pub async fn datasets(ledger: &dyn Ledger) {
    assert_eq!(ledger.load_dataset("conf-ds").await.unwrap(), None);
    assert_eq!(ledger.dataset_version("conf-ds").await.unwrap(), None);
    let store = Scope::store("12").unwrap();
    let region = Scope::region("north").unwrap();
    let rec = |scope: &Scope, id, version, entry: Option<Entry>| StoredRecord {
        scope: scope.clone(),
        id,
        version,
        entry,
    };
    let body = |b: &[u8]| Some(Entry::Record(b.to_vec()));
    ledger
        .store_dataset(
            "conf-ds",
            0,
            2,
            &[
                rec(&Scope::Chain, 1, 1, body(b"a")),
                rec(&Scope::Chain, 2, 2, body(b"b")),
            ],
        )
        .await
        .unwrap();
    // A writer that planned on version 0 too lost the race: nothing of
    // its change is stored.
    let lost = ledger
        .store_dataset("conf-ds", 0, 1, &[rec(&Scope::Chain, 9, 1, body(b"lost"))])
        .await;
    assert!(
        matches!(
            lost,
            Err(ServerError::DatasetConflict {
                expected: 0,
                found: 2,
                ..
            })
        ),
        "{lost:?}"
    );
    let stale = ledger
        .store_dataset("conf-ds", 1, 3, &[rec(&Scope::Chain, 9, 3, body(b"lost"))])
        .await;
    assert!(
        matches!(stale, Err(ServerError::DatasetConflict { .. })),
        "{stale:?}"
    );
    ledger
        .store_dataset(
            "conf-ds",
            2,
            7,
            &[
                rec(&Scope::Chain, 1, 3, body(b"a2")),
                rec(&Scope::Chain, 2, 4, None),
                rec(&store, 1, 5, body(b"a-12")),
                rec(&store, 3, 6, Some(Entry::Hidden)),
                rec(&region, 1, 7, body(b"a-north")),
            ],
        )
        .await
        .unwrap();
    assert_eq!(ledger.dataset_version("conf-ds").await.unwrap(), Some(7));
    let sorted = |mut v: Vec<StoredRecord>| {
        v.sort_by(|a, b| (&a.scope, a.id).cmp(&(&b.scope, b.id)));
        v
    };
    let d = ledger.load_dataset("conf-ds").await.unwrap().unwrap();
    assert_eq!(d.version, 7);
    assert_eq!(
        sorted(d.records),
        vec![
            rec(&Scope::Chain, 1, 3, body(b"a2")),
            rec(&Scope::Chain, 2, 4, None),
            rec(&region, 1, 7, body(b"a-north")),
            rec(&store, 1, 5, body(b"a-12")),
            rec(&store, 3, 6, Some(Entry::Hidden)),
        ]
    );
    let since = ledger
        .load_dataset_since("conf-ds", 5)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(since.version, 7);
    assert_eq!(
        sorted(since.records),
        vec![
            rec(&region, 1, 7, body(b"a-north")),
            rec(&store, 3, 6, Some(Entry::Hidden))
        ]
    );
    // A dataset whose name starts like another's is its own.
    assert_eq!(ledger.load_dataset("conf-d").await.unwrap(), None);
    ledger
        .store_dataset("conf-ds2", 0, 1, &[rec(&store, 1, 1, body(b"x"))])
        .await
        .unwrap();
    let d = ledger.load_dataset("conf-ds").await.unwrap().unwrap();
    assert_eq!(d.records.len(), 5);
    assert_eq!(ledger.load_dataset("conf-other").await.unwrap(), None);
}

/// Terminals belong to a store and region, set after registration.
pub async fn terminal_views(ledger: &dyn Ledger) {
    ledger
        .add_terminal("conf-v1", &[21u8; 32], 1)
        .await
        .unwrap();
    assert_eq!(
        ledger.terminal_view("conf-v1").await.unwrap(),
        Some(View::chain())
    );
    assert_eq!(ledger.terminal_view("conf-none").await.unwrap(), None);
    let v = View::new(Some("north"), Some("12")).unwrap();
    assert!(ledger.set_terminal_view("conf-v1", &v).await.unwrap());
    assert!(!ledger.set_terminal_view("conf-none", &v).await.unwrap());
    assert_eq!(
        ledger.terminal_view("conf-v1").await.unwrap(),
        Some(v.clone())
    );
    let listed = ledger.terminals().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .find(|t| t.terminal_id == "conf-v1")
            .map(|t| &t.view),
        Some(&v)
    );
    // A rotated token keeps the terminal's place.
    ledger
        .rotate_terminal("conf-v1", &[22u8; 32])
        .await
        .unwrap();
    assert_eq!(ledger.terminal_view("conf-v1").await.unwrap(), Some(v));
}

/// Retention deletes old items in bounded chunks; young ones stay.
pub async fn purge(ledger: &dyn Ledger) {
    // Everything the other checks wrote is at now_ms <= 3000.
    while ledger.purge_before(10_000, 1_000).await.unwrap() > 0 {}
    let old: Vec<_> = (1..=5).map(|i| item(i, 2)).collect();
    ledger.push("conf-p", S, old, 20_000).await.unwrap();
    ledger
        .push("conf-p", S, vec![item(6, 2)], 40_000)
        .await
        .unwrap();
    assert_eq!(ledger.purge_before(30_000, 2).await.unwrap(), 2);
    assert_eq!(ledger.purge_before(30_000, 10).await.unwrap(), 3);
    assert_eq!(ledger.purge_before(30_000, 10).await.unwrap(), 0);
    assert_eq!(ledger.totals().await.unwrap().applied, 1);
    // The young item is still remembered.
    let r = ledger
        .push("conf-p", S, vec![item(6, 2)], 50_000)
        .await
        .unwrap();
    assert!(matches!(r[0], ItemResult::Duplicate { .. }));
}

/// Model check: pushes of (terminal, local ids) against a map of what was
/// applied. Every item is applied at most once, resends get the first
/// sequence, and totals match the model.
pub async fn against_model(ledger: &dyn Ledger, ops: &[(u8, Vec<u64>)]) {
    let mut model: HashMap<(String, u64), u64> = HashMap::new();
    let base = ledger.totals().await.unwrap().applied;
    for (t, ids) in ops {
        let terminal = format!("model-{t}");
        let items: Vec<_> = ids.iter().map(|&i| item(i, 2)).collect();
        let results = ledger.push(&terminal, S, items, 0).await.unwrap();
        assert_eq!(results.len(), ids.len());
        for (id, r) in ids.iter().zip(&results) {
            let key = (terminal.clone(), *id);
            match (model.get(&key), r) {
                (None, ItemResult::Applied { server_seq }) => {
                    model.insert(key, *server_seq);
                }
                (Some(s), ItemResult::Duplicate { server_seq }) => assert_eq!(s, server_seq),
                (m, r) => panic!("model {m:?}, ledger {r:?} for {key:?}"),
            }
        }
    }
    assert_eq!(
        ledger.totals().await.unwrap().applied,
        base + model.len() as u64
    );
}
