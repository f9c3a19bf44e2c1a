//! One test per fixed bug of pdc-store, named after the bug.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use pdc_store::Store;

const CHILD_ENV: &str = "PDC_CREATE_CHILD_DIR";

/// The child: creates fresh stores one after another in the directory the
/// parent names, until it is killed.
#[test]
fn creation_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    for i in 0u64.. {
        let path = std::path::Path::new(&dir).join(format!("s{i}.pdc"));
        drop(Store::open(&path).unwrap());
    }
}

/// Issue 14, defect 4: a process killed while redb wrote a new store's
/// header left a file that every later open refused as "not a pdc store".
/// A child creates stores back to back and is SIGKILLed at random
/// instants, 100 times (`PDC_CREATE_KILLS` for more); after each kill,
/// every store file in the directory opens.
#[test]
fn a_kill_during_the_first_open_bricks_the_store() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let rounds: u32 = std::env::var("PDC_CREATE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let exe = std::env::current_exe().unwrap();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut opened = 0usize;
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "creation_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(5_000 + seed % 60_000));
        child.kill().unwrap();
        let _ = child.wait();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            // A creation the kill interrupted leaves only its temporary
            // file beside the path: opening the path starts afresh.
            let path = match path.to_str().and_then(|p| p.strip_suffix(".creating")) {
                Some(p) => std::path::PathBuf::from(p),
                None => path,
            };
            Store::open(&path)
                .unwrap_or_else(|e| panic!("round {round}: {} does not open: {e}", path.display()));
            opened += 1;
        }
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".creating"))
            .collect();
        assert!(
            left.is_empty(),
            "round {round}: temporary files left: {left:?}"
        );
    }
    eprintln!("{rounds} kills during store creation, {opened} stores reopened");
}

mod plaintext {
    use pdc_auth::{AuthStore, Credential, Session, UserRecord};
    use pdc_store::{NewItem, Store, StoreError, StoreKey, StoreOptions};
    use pdc_sync::{Priority, StreamKey};

    /// What the till writes that a copied file must not show.
    const SALE: &[u8] = b"customer 4711-0815-2342, 3 x espresso beans, paid by card ****1234";
    const HASH: &str = "U0VDUkVUSEFTSFNFQ1JFVEhBU0hTRUNSRVRIQVNIMTI";
    const REFUSED: &[u8] = b"refused sale of customer 9999-8888-7777 kept as a dead letter";
    const CUSTOMER: &[u8] = b"{\"name\":\"Erika Mustermann\",\"phone\":\"+49 151 2345678\"}";

    fn fill(store: &mut Store) {
        let item = |payload: &[u8]| NewItem {
            stream: StreamKey(1),
            priority: Priority::High,
            kind: 100,
            created_at_ms: 1_704_067_200_000,
            payload: payload.to_vec(),
        };
        for _ in 0..20 {
            store.append(item(SALE)).unwrap();
        }
        let refused = store.append(item(REFUSED)).unwrap();
        store
            .dead_letter(refused.local_id, "invalid", "refused", 1)
            .unwrap();
        let credential =
            Credential::try_from(format!("$pbkdf2-sha256$i=1000,l=32$U0FMVFNBTFQ${HASH}")).unwrap();
        store
            .put_user(&UserRecord {
                user_id: "cashier-erika".into(),
                role: "cashier".into(),
                credential,
                disabled: false,
            })
            .unwrap();
        store
            .put_session(
                &[3; 32],
                &Session {
                    user_id: "cashier-erika".into(),
                    terminal_id: "till-7".parse().unwrap(),
                    role: "cashier".into(),
                    issued_at_ms: 1,
                    expires_at_ms: 2,
                },
            )
            .unwrap();
        store.dataset_put_local("customers", 12, CUSTOMER).unwrap();
    }

    /// Every secret of [`fill`] (or its first 12 bytes) the raw file holds.
    fn shown(path: &std::path::Path) -> Vec<String> {
        let raw = std::fs::read(path).unwrap();
        let needles: [&[u8]; 6] = [
            SALE,
            &SALE[..12],
            HASH.as_bytes(),
            REFUSED,
            CUSTOMER,
            b"cashier-erika",
        ];
        needles
            .iter()
            .filter(|n| raw.windows(n.len()).any(|w| w == **n))
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect()
    }

    fn opts(key: &StoreKey) -> StoreOptions {
        StoreOptions::encrypted(key.clone())
    }

    /// Issue 16, weakness 6: the till store was plaintext: sales (with
    /// customer ids), dead letters and credentials were readable by anyone
    /// who copied the file. Written with a key, the file shows none of
    /// them, does not open without the key or with another one, and opens
    /// whole with it. (The same writes to a plain store show every one:
    /// the search can fail.)
    #[test]
    fn the_till_store_is_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.pdc");
        fill(&mut Store::open(&plain).unwrap());
        assert_eq!(
            shown(&plain).len(),
            6,
            "the control store shows its secrets"
        );

        let key = StoreKey::from_bytes([0x5A; 32]);
        let path = dir.path().join("sealed.pdc");
        let mut store = Store::open_with_options(&path, opts(&key)).unwrap();
        assert!(store.is_encrypted());
        fill(&mut store);
        drop(store);
        assert_eq!(shown(&path), Vec::<String>::new());

        let before = std::fs::read(&path).unwrap();
        assert!(matches!(Store::open(&path), Err(StoreError::KeyRequired)));
        let wrong = StoreKey::from_bytes([0x5B; 32]);
        assert!(matches!(
            Store::open_with_options(&path, opts(&wrong)),
            Err(StoreError::WrongKey)
        ));
        assert!(matches!(
            Store::open_with_options(&plain, opts(&key)),
            Err(StoreError::NotEncrypted)
        ));
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "a refused open changed the file"
        );

        let store = Store::open_with_options(&path, opts(&key)).unwrap();
        let (pending, quarantined) = store.pending().unwrap();
        assert!(quarantined.is_empty());
        assert_eq!(pending.len(), 20);
        assert!(pending.iter().all(|i| i.payload == SALE));
        assert_eq!(store.dead_letters().unwrap()[0].item.payload, REFUSED);
        let user = store.user("cashier-erika").unwrap().unwrap();
        assert_eq!(user.role, "cashier");
        assert!(store.session(&[3; 32]).unwrap().is_some());
        assert_eq!(
            store.dataset_get("customers", 12).unwrap().as_deref(),
            Some(CUSTOMER)
        );
    }

    /// Key rotation re-seals everything in bounded batches; afterwards the
    /// new key alone opens the store and the old one alone does not.
    #[test]
    fn rekey_re_seals_in_batches_and_retires_the_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sealed.pdc");
        let (old, new) = (StoreKey::from_bytes([1; 32]), StoreKey::from_bytes([2; 32]));
        let mut store = Store::open_with_options(&path, opts(&old)).unwrap();
        fill(&mut store);
        let report = store.rekey(&new, 4).unwrap();
        // 20 pending + 1 dead letter + 1 user + 1 session + 1 local record.
        assert_eq!(report.resealed, 24);
        assert_eq!(report.unreadable, 0);
        assert_eq!(report.generation, 2);
        assert!(report.transactions >= 24 / 4, "{report:?}");
        // Still usable in this process, with new writes under the new key.
        store
            .append(NewItem {
                stream: StreamKey(1),
                priority: Priority::Low,
                kind: 100,
                created_at_ms: 2,
                payload: SALE.to_vec(),
            })
            .unwrap();
        drop(store);
        assert_eq!(shown(&path), Vec::<String>::new());
        assert!(matches!(
            Store::open_with_options(&path, opts(&old)),
            Err(StoreError::WrongKey)
        ));
        let store = Store::open_with_options(&path, opts(&new)).unwrap();
        let (pending, quarantined) = store.pending().unwrap();
        assert!(quarantined.is_empty());
        assert_eq!(pending.len(), 21);
        assert!(store.user("cashier-erika").unwrap().is_some());
        assert!(matches!(
            Store::open(dir.path().join("plain.pdc"))
                .unwrap()
                .rekey(&new, 10),
            Err(StoreError::NotEncrypted)
        ));
    }
}
