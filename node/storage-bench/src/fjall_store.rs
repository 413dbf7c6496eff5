//! Backend (c): fjall, an LSM tree with a journal. One write batch per group, persisted with
//! `PersistMode::SyncData` (fdatasync of the journal) before `commit` returns; the default
//! configuration otherwise (32 MiB block cache, LZ4, background flushes and compactions).
//! Values are the postcard-encoded states.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use rc_node::leaderless::dvv::KeyState;

use crate::backend::{timed, Backend, Visit};
use crate::workload;

const KEYSPACE: &str = "key_states";

pub struct FjallStore {
    path: PathBuf,
    open: Option<(Database, Keyspace)>,
}

fn open(path: &Path) -> Result<(Database, Keyspace)> {
    let db = Database::builder(path).open()?;
    let states = db.keyspace(KEYSPACE, KeyspaceCreateOptions::default)?;
    Ok((db, states))
}

impl FjallStore {
    pub fn open(dir: &Path) -> Result<FjallStore> {
        let path = dir.join("fjall");
        let open = Some(open(&path)?);
        Ok(FjallStore { path, open })
    }

    fn parts(&self) -> Result<&(Database, Keyspace)> {
        self.open
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the database is closed"))
    }
}

impl Backend for FjallStore {
    fn commit(&mut self, batch: Vec<(String, KeyState)>) -> Result<()> {
        let (db, states) = self.parts()?;
        let mut b = db.batch().durability(Some(PersistMode::SyncData));
        for (key, state) in &batch {
            b.insert(states, key.as_str(), workload::encode(state)?);
        }
        b.commit()?;
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<KeyState>> {
        let (_, states) = self.parts()?;
        match states.get(key)? {
            Some(v) => Ok(Some(workload::decode(&v)?)),
            None => Ok(None),
        }
    }

    fn scan(&self, from: &str, to: &str, visit: &mut Visit) -> Result<()> {
        let (_, states) = self.parts()?;
        for guard in states.range(from..to) {
            let (k, v) = guard.into_inner()?;
            let key = std::str::from_utf8(&k)?;
            if !visit(key, workload::decode(&v)?) {
                break;
            }
        }
        Ok(())
    }

    fn restart(&mut self) -> Result<Vec<(String, Duration)>> {
        // Dropping the last handle persists the journal (SyncAll) and stops the workers.
        let ((), close) = timed(|| {
            self.open = None;
            Ok(())
        })?;
        let (opened, reopen) = timed(|| {
            let (db, states) = open(&self.path)?;
            // Ready to serve: a first read works.
            states.first_key_value();
            Ok((db, states))
        })?;
        self.open = Some(opened);
        Ok(vec![
            (
                "close (drop: persist the journal, stop workers)".into(),
                close,
            ),
            (
                "reopen (open + recover the journal + first read)".into(),
                reopen,
            ),
        ])
    }
}
