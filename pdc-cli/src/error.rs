//! The CLI's error: one clear line.

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server side.
    #[error(transparent)]
    Server(#[from] pdc_server::ServerError),
    /// A terminal store.
    #[error(transparent)]
    Store(#[from] pdc_store::StoreError),
    /// A terminal engine.
    #[error(transparent)]
    Engine(#[from] pdc_core::EngineError),
    /// Encoding a record.
    #[error(transparent)]
    Codec(#[from] pdc_codec::CodecError),
    /// Files and sockets.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Anything else, explained.
    #[error("{0}")]
    Msg(String),
}
