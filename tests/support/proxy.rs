//! A TCP proxy in front of the Kubernetes stand-in, one per replica, that a test can cut: its
//! requests then fail at once ([`Link::Refused`]) or hang ([`Link::Dropped`]), as when a node
//! loses the API server.

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::kube::KubeStandin;

/// What a replica's proxy does with its API traffic.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Link {
    Up,
    /// Connections are closed at once, new ones as soon as they come: requests fail fast.
    Refused,
    /// Accepted and never answered, like a network that drops packets: requests hang.
    Dropped,
}

/// A TCP proxy in front of the stand-in, one per replica.
pub struct ApiProxy {
    url: String,
    link: watch::Sender<Link>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiProxy {
    pub async fn start(upstream: &str) -> ApiProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let (link, links) = watch::channel(Link::Up);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(forward(client, upstream.clone(), links.clone()));
            }
        });
        ApiProxy { url, link, task }
    }

    pub fn set(&self, link: Link) {
        self.link.send_replace(link);
    }

    /// A copy of `kubeconfig` that goes through this proxy.
    pub fn kubeconfig(&self, kube: &KubeStandin, dir: &Path, name: &str) -> PathBuf {
        let text = std::fs::read_to_string(kube.kubeconfig(dir)).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text.replace(&kube.url(), &self.url)).unwrap();
        path
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards one connection while the link is up. Refused, it closes the connection. Dropped, it
/// holds the connection open and silent until the link changes again, then closes it so that the
/// client opens a new one.
async fn forward(mut client: TcpStream, upstream: String, mut links: watch::Receiver<Link>) {
    if *links.borrow_and_update() == Link::Up {
        let Ok(mut server) = TcpStream::connect(&upstream).await else {
            return;
        };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
            _ = links.wait_for(|l| *l != Link::Up) => {}
        }
    }
    if *links.borrow_and_update() == Link::Dropped {
        let _ = links.changed().await;
    }
    let _ = client.shutdown().await;
}
