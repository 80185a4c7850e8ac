//! Typed errors of the task's generator and corpora.

/// What can go wrong generating or writing UI-DSL records.
///
/// ```
/// let config = uidsl::GeneratorConfig { themes: vec![], ..uidsl::GeneratorConfig::all(1, 1) };
/// let err = uidsl::generate(&config).unwrap_err();
/// assert!(matches!(err, uidsl::UiDslError::InvalidConfig { .. }));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum UiDslError {
    /// A generator configuration cannot produce the records it asks for.
    #[error("invalid data configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// A corpus file could not be written.
    #[error(transparent)]
    File(#[from] lora_hf::HfFileError),
}
