//! How the backends' errors become the operations' error: a missing record is
//! `NotFound`, a contradicted one `Conflict`, a value the database refused
//! invalid input, anything else from the store a `Storage` failure (which
//! counts against the store's breaker).

use crate::error::OpError;
use crate::search::SearchError;
use crate::store::StoreError;

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => OpError::NotFound(m),
            StoreError::Conflict(m) => OpError::Conflict(m),
            bad if bad.is_bad_value() => {
                OpError::invalid(format!("the store refused a value of this call: {bad}"))
            }
            other => OpError::Storage(other.to_string()),
        }
    }
}

impl From<SearchError> for OpError {
    fn from(e: SearchError) -> Self {
        OpError::Search(e.to_string())
    }
}
