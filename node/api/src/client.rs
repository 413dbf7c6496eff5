//! The client key-value API's bodies.

use serde::{Deserialize, Serialize};

/// Client API: body of `PUT /v1/kv/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    pub value: String,
    /// Leaderless `Siblings` mode: the context of the read this write supersedes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// Client API: a key's value as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    /// Log index of the write that produced this value.
    pub mod_index: u64,
}

/// Client API: answer to a write (`PUT`, `DELETE`, batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    /// Log index the write was assigned.
    pub index: u64,
    pub epoch: u64,
    /// For `DELETE`: whether the key existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
}

/// Client API: answer to a prefix scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanResult {
    pub items: Vec<KeyValue>,
    /// True when more keys matched than `limit`.
    pub more: bool,
}

/// One operation of `POST /v1/batch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum BatchOp {
    Put { key: String, value: String },
    Delete { key: String },
}

/// Body of `POST /v1/batch`: applied atomically, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub ops: Vec<BatchOp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ops_use_a_lowercase_op_tag() -> Result<(), serde_json::Error> {
        let req: BatchRequest = serde_json::from_str(
            r#"{"ops":[{"op":"put","key":"a","value":"1"},{"op":"delete","key":"b"}]}"#,
        )?;
        assert_eq!(
            req.ops,
            vec![
                BatchOp::Put {
                    key: "a".into(),
                    value: "1".into()
                },
                BatchOp::Delete { key: "b".into() }
            ]
        );
        assert!(
            serde_json::from_str::<BatchRequest>(r#"{"ops":[{"op":"zap","key":"a"}]}"#).is_err()
        );
        Ok(())
    }
}
