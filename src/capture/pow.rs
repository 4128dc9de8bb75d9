//! The optional proof of work asked of new voters (`POW_BITS` > 0): a
//! hashcash that the vote page's script (`/pow.js`) solves before posting,
//! and that `loadgen` solves too.
//!
//! A challenge is `<window>.<tag>`: the current time window
//! (`POW_WINDOW_SECS`) and an HMAC of it and the difficulty with the cookie
//! key, so only the nodes make challenges and none can be precomputed
//! before its window. A solution is `<challenge>.<nonce>` whose SHA-256
//! starts with `POW_BITS` zero bits; it is valid in its window and the next
//! one, and each node takes it once (the spent ones are remembered for two
//! windows): one solution is at most one new voter per capture node. It
//! travels in the query string (`POST /?pow=...`, `POST /api/vote?pow=...`),
//! where the edge can see it, so the edge can give voters who paid the work
//! a looser new-voter limit than the no-JavaScript fallback (a vote without
//! a solution, which capture still takes).

use sha2::{Digest, Sha256};

use crate::cookie::CookieSealer;

/// The script that solves the challenge on the vote page. SHA-256 in plain
/// JavaScript: `crypto.subtle` exists only in secure contexts, and the edge
/// may serve plain HTTP. One block suffices, as a solution is shorter than
/// 56 bytes ([`MAX_SOLUTION_LEN`]).
pub const SCRIPT: &str = r#"(function(){
var f=document.querySelector('form[data-pow]');if(!f)return;
var K=[0x428a2f98,0x71374491,0xb5c0fbcf,0xe9b5dba5,0x3956c25b,0x59f111f1,0x923f82a4,0xab1c5ed5,0xd807aa98,0x12835b01,0x243185be,0x550c7dc3,0x72be5d74,0x80deb1fe,0x9bdc06a7,0xc19bf174,0xe49b69c1,0xefbe4786,0x0fc19dc6,0x240ca1cc,0x2de92c6f,0x4a7484aa,0x5cb0a9dc,0x76f988da,0x983e5152,0xa831c66d,0xb00327c8,0xbf597fc7,0xc6e00bf3,0xd5a79147,0x06ca6351,0x14292967,0x27b70a85,0x2e1b2138,0x4d2c6dfc,0x53380d13,0x650a7354,0x766a0abb,0x81c2c92e,0x92722c85,0xa2bfe8a1,0xa81a664b,0xc24b8b70,0xc76c51a3,0xd192e819,0xd6990624,0xf40e3585,0x106aa070,0x19a4c116,0x1e376c08,0x2748774c,0x34b0bcb5,0x391c0cb3,0x4ed8aa4a,0x5b9cca4f,0x682e6ff3,0x748f82ee,0x78a5636f,0x84c87814,0x8cc70208,0x90befffa,0xa4506ceb,0xbef9a3f7,0xc67178f2];
function h0(s){var w=[],i,n=s.length;for(i=0;i<64;i++)w[i]=0;
for(i=0;i<n;i++)w[i>>2]|=s.charCodeAt(i)<<(24-8*(i&3));w[n>>2]|=0x80<<(24-8*(n&3));w[15]=n*8;
for(i=16;i<64;i++){var a=w[i-15],b=w[i-2];w[i]=(w[i-16]+((a>>>7|a<<25)^(a>>>18|a<<14)^(a>>>3))+w[i-7]+((b>>>17|b<<15)^(b>>>19|b<<13)^(b>>>10)))|0;}
var A=0x6a09e667,B=0xbb67ae85,C=0x3c6ef372,D=0xa54ff53a,E=0x510e527f,F=0x9b05688c,G=0x1f83d9ab,H=0x5be0cd19;
for(i=0;i<64;i++){var t1=(H+((E>>>6|E<<26)^(E>>>11|E<<21)^(E>>>25|E<<7))+((E&F)^(~E&G))+K[i]+w[i])|0;
var t2=(((A>>>2|A<<30)^(A>>>13|A<<19)^(A>>>22|A<<10))+((A&B)^(A&C)^(B&C)))|0;H=G;G=F;F=E;E=(D+t1)|0;D=C;C=B;B=A;A=(t1+t2)|0;}
return (A+0x6a09e667)>>>0;}
f.addEventListener('submit',function(e){if(f.dataset.solved)return;e.preventDefault();
var c=f.dataset.pow,bits=+f.dataset.powBits,btn=e.submitter,n=0,st=document.getElementById('pow');
var salt=Math.random().toString(36).slice(2,10)||'s';
if(st)st.textContent='Checking you are not a robot\u2026';
function step(){for(var end=n+20000;n<end;n++){if((h0(c+'.'+salt+n)>>>(32-bits))===0){
f.action='/?pow='+c+'.'+salt+n;f.dataset.solved='1';f.requestSubmit(btn);return;}}setTimeout(step,0);}
// Not at once: a submission asked for while the submit event is still
// being dispatched is ignored.
setTimeout(step,0);});
})();
"#;

/// A window, a 16-digit tag, a nonce: under the 56 bytes of one SHA-256
/// block, which the page's script relies on. A window of five minutes has 7
/// digits (for the next 19,000 years), which leaves the nonce 30.
pub const MAX_SOLUTION_LEN: usize = 55;
const MAX_NONCE_LEN: usize = 32;

/// Why a solution was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PowError {
    #[error("not a solution to one of our challenges")]
    Malformed,
    #[error("the challenge has expired")]
    Expired,
    #[error("not enough work")]
    TooLittleWork,
    #[error("this solution was used already")]
    Spent,
}

#[derive(Clone, Copy, Debug)]
pub struct Pow {
    pub bits: u8,
    pub window_secs: u64,
}

impl Pow {
    fn tag(&self, sealer: &CookieSealer, window: u64) -> String {
        let t = sealer.tag("pow", format!("{window}.{}", self.bits).as_bytes());
        t[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The challenge of the window holding `now_secs`.
    pub fn challenge(&self, sealer: &CookieSealer, now_secs: u64) -> String {
        let window = now_secs / self.window_secs;
        format!("{window}.{}", self.tag(sealer, window))
    }

    /// Checks the work and the challenge (this window or the last).
    pub fn check(
        &self,
        sealer: &CookieSealer,
        solution: &str,
        now_secs: u64,
    ) -> Result<(), PowError> {
        if solution.len() > MAX_SOLUTION_LEN || !solution.is_ascii() {
            return Err(PowError::Malformed);
        }
        let mut parts = solution.splitn(3, '.');
        let (Some(window), Some(tag), Some(nonce)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(PowError::Malformed);
        };
        let window: u64 = window.parse().map_err(|_| PowError::Malformed)?;
        if nonce.is_empty()
            || nonce.len() > MAX_NONCE_LEN
            || !nonce.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(PowError::Malformed);
        }
        // Constant-time comparison is not needed: the tag protects no
        // secret, only the freshness of a public challenge.
        if tag != self.tag(sealer, window) {
            return Err(PowError::Malformed);
        }
        let current = now_secs / self.window_secs;
        if window + 1 < current || window > current {
            return Err(PowError::Expired);
        }
        if work(solution) < u32::from(self.bits) {
            return Err(PowError::TooLittleWork);
        }
        Ok(())
    }
}

/// Leading zero bits of the first 32 of SHA-256(`solution`).
fn work(solution: &str) -> u32 {
    let d = Sha256::digest(solution.as_bytes());
    u32::from_be_bytes([d[0], d[1], d[2], d[3]]).leading_zeros()
}

/// A solution of `challenge` with `bits` of work, as the page's script
/// finds it: a random salt (each voter's solution differs, and a node takes
/// each once), then the first decimal counter that works. Loadgen and the
/// tests use it.
pub fn solve(challenge: &str, bits: u8) -> String {
    let salt = rand::random::<u32>();
    (0u64..)
        .map(|n| format!("{challenge}.{salt:08x}{n}"))
        .find(|s| work(s) >= u32::from(bits))
        .expect("some nonce works")
}

/// The `pow` parameter of a query string, if any.
pub fn from_query(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|p| p.strip_prefix("pow="))
        .filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::cookie::Key;

    #[test]
    fn a_solution_is_valid_for_its_window_and_the_next_only() {
        let sealer = CookieSealer::new(&Key::derive_from(&[7; 32]));
        let pow = Pow {
            bits: 8,
            window_secs: 300,
        };
        let now = 1_790_000_000;
        let c = pow.challenge(&sealer, now);
        let s = solve(&c, 8);
        assert!(work(&s) >= 8);
        assert_eq!(pow.check(&sealer, &s, now), Ok(()));
        assert_eq!(pow.check(&sealer, &s, now + 300), Ok(()));
        assert_eq!(pow.check(&sealer, &s, now + 600), Err(PowError::Expired));
        let other = CookieSealer::new(&Key::derive_from(&[8; 32]));
        assert_eq!(pow.check(&other, &s, now), Err(PowError::Malformed));
        let harder = Pow { bits: 12, ..pow };
        assert_eq!(
            harder.check(&sealer, &s, now),
            Err(PowError::Malformed),
            "the tag names the difficulty"
        );
        let lazy = (0..)
            .map(|n| format!("{c}.{n}"))
            .find(|s| work(s) == 0)
            .unwrap();
        assert_eq!(pow.check(&sealer, &lazy, now), Err(PowError::TooLittleWork));
        for bad in [
            "",
            "x",
            "1.2",
            &format!("{c}."),
            &format!("{c}.{}", "9".repeat(33)),
            &format!("{c}.a b"),
        ] {
            assert_eq!(
                pow.check(&sealer, bad, now),
                Err(PowError::Malformed),
                "{bad}"
            );
        }
        assert!(s.len() <= MAX_SOLUTION_LEN);
        assert_ne!(solve(&c, 8), solve(&c, 8), "each solver finds its own");
        assert_eq!(from_query("a=1&pow=12.ab.3"), Some("12.ab.3"));
        assert_eq!(from_query("pow="), None);
    }

    /// The page's script and [`solve`] must agree on SHA-256: node runs the
    /// script's hash function on a few strings when it is installed.
    #[test]
    fn the_pages_sha256_is_sha256() {
        let node = which_node().expect("node is needed: `make test` installs it");
        let fun = &SCRIPT
            [SCRIPT.find("function h0").unwrap()..SCRIPT.find("f.addEventListener").unwrap()];
        let k = &SCRIPT[SCRIPT.find("var K=").unwrap()..SCRIPT.find("function h0").unwrap()];
        let inputs = ["", "abc", "1234.0123456789abcdef.42", &"x".repeat(55)];
        let js = format!("{k}{fun}console.log(JSON.stringify({:?}.map(h0)));", inputs);
        let out = std::process::Command::new(node)
            .arg("-e")
            .arg(js)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Vec<u32> = serde_json::from_slice(&out.stdout).unwrap();
        let want: Vec<u32> = inputs
            .iter()
            .map(|s| {
                let d = Sha256::digest(s.as_bytes());
                u32::from_be_bytes([d[0], d[1], d[2], d[3]])
            })
            .collect();
        assert_eq!(got, want);
    }

    fn which_node() -> Result<std::path::PathBuf, ()> {
        std::env::var_os("PATH")
            .and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("node"))
                    .find(|p| p.is_file())
            })
            .ok_or(())
    }
}
