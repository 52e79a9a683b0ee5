//! The Raft network trusts only answers signed for its request: a stranger at a member's
//! address can neither count as a replica nor push the term (shown first with a signed
//! answer, which is taken).

use std::time::Duration;

use openraft::error::RaftError;
use openraft::raft::AppendEntriesResponse;
use openraft::Vote;
use shoal_raft::auth::{body_digest, Nonce, NONCE_HEADER, SIGNATURE_HEADER};
use shoal_raft::{CallError, ClusterSecret, InternalClient};
use shoal_storage::codec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type AppendAnswer = Result<AppendEntriesResponse<u64>, RaftError<u64>>;

/// How the fake peer signs its answers.
#[derive(Clone, Copy)]
enum Signing {
    None,
    ForTheRequest,
    ForAnotherRequest,
}

/// Answers one request with a "higher vote" (what would depose a leader), signed as
/// `signing` says with `secret`.
async fn fake_peer(secret: ClusterSecret, signing: Signing) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0_u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            socket.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let header = |name: &str| {
            head.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name).then(|| value.trim().to_string())
            })
        };
        let length: usize = header("content-length").unwrap().parse().unwrap();
        socket.read_exact(&mut vec![0; length]).await.unwrap();
        let nonce = Nonce::from_str_radix(&header(NONCE_HEADER).unwrap(), 16).unwrap();
        let answer: AppendAnswer = Ok(AppendEntriesResponse::HigherVote(Vote::new(99, 7)));
        let body = codec::encode(&answer);
        let signature = match signing {
            Signing::None => None,
            Signing::ForTheRequest => Some(secret.sign_response(nonce, 200, &body_digest(&body))),
            Signing::ForAnotherRequest => {
                Some(secret.sign_response(nonce + 1, 200, &body_digest(&body)))
            }
        };
        let mut response = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n", body.len());
        if let Some(signature) = signature {
            response.push_str(&format!("{SIGNATURE_HEADER}: {signature}\r\n"));
        }
        response.push_str("connection: close\r\n\r\n");
        socket.write_all(response.as_bytes()).await.unwrap();
        socket.write_all(&body).await.unwrap();
    });
    addr
}

async fn append_to(addr: &str, client: &InternalClient) -> Result<AppendAnswer, CallError> {
    client.call(addr, 7, "/internal/raft/append", &(), Duration::from_secs(5)).await
}

#[tokio::test]
async fn only_an_answer_signed_for_the_request_counts() {
    let secret = ClusterSecret::new(b"the cluster secret".to_vec());
    let client = InternalClient::new(secret.clone(), Duration::from_secs(1));

    // A member's answer is taken as it is: this is what a stranger's answer would do.
    let member = fake_peer(secret.clone(), Signing::ForTheRequest).await;
    let answer = append_to(&member, &client).await.expect("a member's answer is taken");
    assert!(matches!(answer, Ok(AppendEntriesResponse::HigherVote(_))));

    let stranger = ClusterSecret::new(b"guessing the secret".to_vec());
    for (signer, signing, what) in [
        (secret.clone(), Signing::None, "an unsigned answer"),
        (stranger, Signing::ForTheRequest, "an answer signed with another secret"),
        (secret.clone(), Signing::ForAnotherRequest, "an answer signed for another request"),
    ] {
        let addr = fake_peer(signer, signing).await;
        match append_to(&addr, &client).await {
            Err(CallError::Failed { reason, .. }) => {
                assert!(reason.contains("not signed by a member"), "{what}: {reason}")
            }
            other => panic!("{what} was taken: {other:?}"),
        }
    }
}
