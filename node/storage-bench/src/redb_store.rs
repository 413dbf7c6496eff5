//! Backend (b): redb, a copy-on-write B-tree in one file. One write transaction per batch at
//! the default durability (`Durability::Immediate`: durable when `commit` returns), and the
//! default cache (1 GiB). Values are the postcard-encoded states.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use rc_node::leaderless::dvv::KeyState;
use redb::{Database, TableDefinition};

use crate::backend::{timed, Backend, Visit};
use crate::workload;

const STATES: TableDefinition<&str, &[u8]> = TableDefinition::new("key_states");

pub struct RedbStore {
    path: PathBuf,
    db: Option<Database>,
}

impl RedbStore {
    pub fn open(dir: &Path) -> Result<RedbStore> {
        let path = dir.join("store.redb");
        let db = Database::create(&path)?;
        // Create the table once, so that readers before the first write find it.
        let tx = db.begin_write()?;
        tx.open_table(STATES)?;
        tx.commit()?;
        Ok(RedbStore { path, db: Some(db) })
    }

    fn db(&self) -> Result<&Database> {
        self.db
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the database is closed"))
    }
}

impl Backend for RedbStore {
    fn commit(&mut self, batch: Vec<(String, KeyState)>) -> Result<()> {
        let tx = self.db()?.begin_write()?;
        {
            let mut table = tx.open_table(STATES)?;
            for (key, state) in &batch {
                table.insert(key.as_str(), workload::encode(state)?.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// One read transaction per get, as independent requests of a server would take.
    fn get(&self, key: &str) -> Result<Option<KeyState>> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(STATES)?;
        match table.get(key)? {
            Some(v) => Ok(Some(workload::decode(v.value())?)),
            None => Ok(None),
        }
    }

    fn scan(&self, from: &str, to: &str, visit: &mut Visit) -> Result<()> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(STATES)?;
        for item in table.range::<&str>(from..to)? {
            let (k, v) = item?;
            if !visit(k.value(), workload::decode(v.value())?) {
                break;
            }
        }
        Ok(())
    }

    fn restart(&mut self) -> Result<Vec<(String, Duration)>> {
        let ((), close) = timed(|| {
            self.db = None;
            Ok(())
        })?;
        let (db, open) = timed(|| {
            let db = Database::open(&self.path)?;
            // Ready to serve: a read transaction on the table works.
            db.begin_read()?.open_table(STATES)?;
            Ok(db)
        })?;
        self.db = Some(db);
        Ok(vec![
            ("close (drop the Database)".into(), close),
            ("reopen (open + first read transaction)".into(), open),
        ])
    }
}
