//! The stock levels of the till's store as the server last sent them
//! (`GET /v1/stock`), with the feed position to ask from next. Levels are
//! advisory: the till may warn on low stock, never refuse a sale for it.

use pdc_sync::StockLevel;
use redb::TableDefinition;

use crate::{Store, StoreError};

/// Product id → quantity (8 bytes little-endian, sealed in an encrypted
/// store like every other row).
pub(crate) const STOCK: TableDefinition<'static, u64, &'static [u8]> =
    TableDefinition::new("stock_levels");
const STOCK_FEED: TableDefinition<'static, &'static str, u64> = TableDefinition::new("stock_feed");

impl Store {
    /// Applies a page of the stock feed and moves the feed position to
    /// `next`, in one commit (a crash keeps both or neither).
    pub fn apply_stock(&self, levels: &[StockLevel], next: u64) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(STOCK)?;
            for l in levels {
                let key = u64::from(l.product_id);
                let row = l.quantity.to_le_bytes();
                t.insert(key, &*self.seal_row(STOCK, &key, &row)?)?;
            }
            tx.open_table(STOCK_FEED)?.insert("next", next)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A product's level as last sent (`None`: the server sent none).
    pub fn stock_level(&self, product_id: u32) -> Result<Option<i64>, StoreError> {
        let rtx = self.db.begin_read()?;
        let t = match rtx.open_table(STOCK) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let key = u64::from(product_id);
        let Some(v) = t.get(key)? else {
            return Ok(None);
        };
        let row = self.open_row(STOCK, &key, v.value())?;
        let bytes: [u8; 8] = row
            .as_ref()
            .try_into()
            .map_err(|_| StoreError::Corrupt(format!("stock level of {product_id}")))?;
        Ok(Some(i64::from_le_bytes(bytes)))
    }

    /// Where the next stock request starts (0: from the beginning).
    pub fn stock_position(&self) -> Result<u64, StoreError> {
        let rtx = self.db.begin_read()?;
        match rtx.open_table(STOCK_FEED) {
            Ok(t) => Ok(t.get("next")?.map_or(0, |v| v.value())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// The store holds each product's last level and the last position,
        /// like a map updated page by page.
        #[test]
        fn stock_pages_match_a_map(pages in proptest::collection::vec(
            proptest::collection::vec((0u32..20, any::<i64>()), 0..10), 1..8)) {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path().join("s.pdc")).unwrap();
            let mut model: HashMap<u32, i64> = HashMap::new();
            let mut seq = 0u64;
            for page in &pages {
                let levels: Vec<StockLevel> = page.iter().map(|&(p, q)| {
                    seq += 1;
                    model.insert(p, q);
                    StockLevel { product_id: p, quantity: q, seq }
                }).collect();
                store.apply_stock(&levels, seq).unwrap();
            }
            for p in 0..20 {
                prop_assert_eq!(store.stock_level(p).unwrap(), model.get(&p).copied());
            }
            prop_assert_eq!(store.stock_position().unwrap(), seq);
        }
    }

    #[test]
    fn a_fresh_store_has_no_stock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.pdc")).unwrap();
        assert_eq!(store.stock_level(1).unwrap(), None);
        assert_eq!(store.stock_position().unwrap(), 0);
    }
}
