//! QUIC helpers the transport tests share (included with `#[path]` by tests/transport.rs
//! and tests/sharing.rs; files under tests/support/ are not test targets of their own).

/// A QUIC server that reads each bidirectional stream to its end and answers with its length.
pub fn serve(server: quinn::Endpoint) {
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        let mut n = 0u64;
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(Some(k)) = recv.read(&mut buf).await {
                            n += k as u64;
                        }
                        let _ = send.write_all(&n.to_le_bytes()).await;
                        let _ = send.finish();
                        let _ = send.stopped().await;
                    });
                }
            });
        }
    });
}
