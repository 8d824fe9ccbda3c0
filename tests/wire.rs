//! A worker facing a misbehaving peer over real QUIC: an oversized or malformed frame
//! resets that stream and is counted; the worker never allocates what the peer claimed,
//! never panics, and keeps serving.

use inferlat::clock::Clock;
use inferlat::harness::{Options, Topology};
use inferlat::plan::{self, schedule::Shape};
use inferlat::scenario::{self, ProfileLibrary, testing};
use std::path::Path;
use std::sync::atomic::Ordering;
use tokio_util::sync::CancellationToken;

fn scenario_text() -> String {
    testing::direct("wire", "ideal", "rtt = \"2ms\"")
        .preset("tinyllama-1.1b")
        .workload("prompt_tokens = 8\noutput_tokens = 2\narrival = { kind = \"closed\", concurrency = 1 }\nrequests = 1")
        .build()
}

async fn send_raw(conn: &quinn::Connection, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(bytes).await.map_err(|e| e.to_string())?;
    let _ = send.finish();
    recv.read_to_end(1 << 20).await.map_err(|e| e.to_string())
}

#[test]
fn bad_frames_reset_their_stream_and_the_worker_keeps_serving() {
    let s = scenario::parse(
        Path::new("wire.toml"),
        &scenario_text(),
        &ProfileLibrary::built_in(),
    )
    .unwrap();
    let plan = plan::plan(&s).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let clock = Clock::real().unwrap();
        let options = Options {
            max_frame: 1024,
            ..Options::default()
        };
        let topo = Topology::build(&s, &plan, &clock, &options, CancellationToken::new())
            .await
            .unwrap();
        let conn = topo.connections[0].2.clone();

        // A header claiming a 4 GiB payload: refused from the header alone.
        let oversized = [2u8, 0xff, 0xff, 0xff, 0xff];
        let r = send_raw(&conn, &oversized).await;
        assert!(
            r.as_ref().is_err_and(|e| e.contains("reset")),
            "oversized: {r:?}"
        );
        // An unknown frame kind.
        let r = send_raw(&conn, &[99, 0, 0, 0, 1, 0]).await;
        assert!(r.is_err(), "unknown kind: {r:?}");
        // A request whose payload is cut short by the end of the stream.
        let r = send_raw(&conn, &[1, 0, 0, 0, 40, 1, 2, 3]).await;
        assert!(r.is_err(), "truncated: {r:?}");
        // A token frame where a request belongs: answered with an Error frame.
        let r = send_raw(&conn, &[3, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0])
            .await
            .unwrap();
        assert_eq!(r.first(), Some(&5u8), "expected an Error frame, got {r:?}");

        assert!(topo.nodes[0].stats.malformed.load(Ordering::Relaxed) >= 3);
        // The same connection still serves a real request.
        let target = topo.clients[0].clone();
        let t = target
            .call(
                7,
                Shape {
                    prompt: 8,
                    output: 2,
                },
                &clock,
            )
            .await
            .unwrap();
        assert_eq!(t.tokens.len(), 2);
        topo.shutdown().await;
    });
}
