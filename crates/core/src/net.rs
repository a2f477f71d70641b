//! Listening addresses, shared by every server (OTLP receivers, the query API).

/// Check that `endpoint` is `host:port`, naming `example_port` in the advice.
pub fn check_endpoint(endpoint: &str, example_port: u16) -> Result<(), String> {
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return Err(format!(
            "{endpoint:?} is not host:port (e.g. 127.0.0.1:{example_port}, or 0.0.0.0:{example_port} for every interface)"
        ));
    };
    if host.is_empty() {
        return Err(format!(
            "{endpoint:?} has no host; write 127.0.0.1{endpoint} (local only) or 0.0.0.0{endpoint}"
        ));
    }
    port.parse::<u16>()
        .map_err(|_| format!("{endpoint:?}: {port:?} is not a port number"))?;
    Ok(())
}

/// Bind a TCP listener, resolving `host:port` (port 0 picks a free port).
pub fn bind(endpoint: &str) -> Result<tokio::net::TcpListener, std::io::Error> {
    use std::net::ToSocketAddrs;
    let mut last = None;
    for addr in endpoint.to_socket_addrs()? {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => {
                l.set_nonblocking(true)?;
                return tokio::net::TcpListener::from_std(l);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("{endpoint} resolves to no address"))))
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {endpoint}: {e}")))
}
