//! [`shutdown_signal`]: the future a server program stops on (Ctrl-C, `SIGTERM`).

use tracing::{info, warn};

/// Resolves when the process is asked to stop: Ctrl-C, or `SIGTERM` on Unix.
///
/// If the signal handlers cannot be installed, it logs a warning and never resolves.
///
/// # Cancel safety
/// Dropping the future stops listening for the signals; nothing else happens.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => info!("Ctrl-C received"),
            Err(error) => {
                warn!(%error, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
                info!("SIGTERM received");
            }
            Err(error) => {
                warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
