//! What the index refuses: a subject it does not hold, or a question that makes no sense. The
//! service maps it into its domain error; the agent and the SDK report it as is.

/// Why a question to the index has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("invalid {field}: {message}")]
    InvalidArgument { field: String, message: String },
}

impl IndexError {
    pub fn not_found(kind: &'static str, id: impl ToString) -> Self {
        Self::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
}
