//! `cache.redis.url` parsing: `redis://[[user]:password@]host[:port][/db]`.
//!
//! Hand-written rather than taken from the `redis` crate's connection layer, which corvid does not
//! use (it only borrows the crate's RESP encoding and parsing).

use percent_encoding::percent_decode_str;

/// Where the Redis server is and how to log into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: i64,
}

impl Target {
    /// The `host:port` form that `ToSocketAddrs` takes (IPv6 literals keep their brackets).
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The commands sent on every new connection, before anything else: `AUTH` and `SELECT`
    /// when the URL asks for them.
    pub fn handshake(&self) -> Vec<(&'static str, redis::Cmd)> {
        let mut cmds = Vec::new();
        if let Some(password) = &self.password {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = &self.username {
                auth.arg(user);
            }
            auth.arg(password);
            cmds.push(("AUTH", auth));
        }
        if self.db != 0 {
            let mut select = redis::cmd("SELECT");
            select.arg(self.db);
            cmds.push(("SELECT", select));
        }
        cmds
    }
}

pub fn parse(url: &str) -> Result<Target, String> {
    let rest = if let Some(rest) = url.strip_prefix("redis://") {
        rest
    } else if url.starts_with("rediss://") {
        return Err("rediss:// (Redis over TLS) is not supported yet".into());
    } else if url.starts_with("unix://") || url.starts_with("redis+unix://") {
        return Err("Redis over a Unix socket is not supported yet".into());
    } else {
        return Err(format!(
            "the Redis URL must start with redis://, got {url:?}"
        ));
    };
    let rest = match rest.find(['?', '#']) {
        Some(i) if !rest[i..].trim_start_matches(['?', '#']).is_empty() => {
            return Err("query parameters in the Redis URL are not supported".into())
        }
        Some(i) => &rest[..i],
        None => rest,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let decode = |s: &str| -> Result<String, String> {
        percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| "the Redis URL's user or password is not valid UTF-8".to_string())
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, pass) = match info.find(':') {
                Some(i) => (&info[..i], Some(&info[i + 1..])),
                None => (info, None),
            };
            let user = (!user.is_empty()).then(|| decode(user)).transpose()?;
            let pass = pass.map(decode).transpose()?;
            match (user, pass) {
                (None, None) => (None, None),
                (user, Some(pass)) => (user, Some(pass)),
                // `redis://secret@host` is how some tools spell a password-only login.
                (Some(user), None) => (None, Some(user)),
            }
        }
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let end = v6
            .find(']')
            .ok_or_else(|| "unclosed [ in the Redis URL's host".to_string())?;
        let after = &v6[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err("bad characters after the Redis URL's IPv6 host".into()),
        };
        (&v6[..end], port)
    } else {
        match hostport.rfind(':') {
            Some(i) => (&hostport[..i], Some(&hostport[i + 1..])),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("the Redis URL has no host".into());
    }
    let port = match port {
        None => 6379,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("bad port in the Redis URL: {p:?}"))?,
    };
    let db = match path.trim_end_matches('/') {
        "" => 0,
        d => d
            .parse::<i64>()
            .ok()
            .filter(|d| *d >= 0)
            .ok_or_else(|| format!("bad database number in the Redis URL: {d:?}"))?,
    };
    Ok(Target {
        host: host.to_string(),
        port,
        username,
        password,
        db,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_corvid_documents() {
        let t = parse("redis://127.0.0.1:6379").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.db), ("127.0.0.1", 6379, 0));
        assert_eq!((&t.username, &t.password), (&None, &None));
        assert!(t.handshake().is_empty());

        let t = parse("redis://:p%40ss@cache.local:7000/3").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.db), ("cache.local", 7000, 3));
        assert_eq!(t.username, None);
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        assert_eq!(t.handshake().len(), 2);

        let t = parse("redis://corvid:pw@[::1]/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 6379));
        assert_eq!(t.host_port(), "[::1]:6379");
        assert_eq!(t.username.as_deref(), Some("corvid"));

        let t = parse("redis://host").unwrap();
        assert_eq!(t.host_port(), "host:6379");
    }

    #[test]
    fn rejects_what_it_cannot_serve() {
        assert!(parse("rediss://h:1").unwrap_err().contains("not supported"));
        assert!(parse("http://h:1").is_err());
        assert!(parse("redis://:6379").is_err());
        assert!(parse("redis://h:0").is_err());
        assert!(parse("redis://h:99999").is_err());
        assert!(parse("redis://h/x").is_err());
        assert!(parse("redis://h?protocol=resp3").is_err());
    }
}
