//! The codec every generated client and server uses: tonic-prost's, except that a message that
//! cannot be decoded is the sender's fault (`INVALID_ARGUMENT`), not `INTERNAL`.
//!
//! prost refuses messages nested deeper than its recursion limit (100), so a `Struct` metadata
//! nested that deep, sent straight to a service over gRPC, never reaches the services' own depth
//! check; tonic-prost reports every decode failure as `INTERNAL`, which reads as our bug and is
//! what alerting counts. The decoder fails only on undecodable bytes (the size limit is checked by
//! tonic before it runs), so its failure is typed by where it happens, not by its text.

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder};

/// What a peer is told when its message could not be decoded.
const UNDECODABLE: &str =
    "the message could not be decoded: it is malformed or nested more than 100 levels deep";

/// tonic-prost's codec with decode failures answered as `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct TenantryCodec<T, U> {
    inner: ProstCodec<T, U>,
}

impl<T, U> Default for TenantryCodec<T, U> {
    fn default() -> Self {
        Self {
            inner: ProstCodec::default(),
        }
    }
}

impl<T, U> Codec for TenantryCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = TenantryDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        TenantryDecoder {
            inner: self.inner.decoder(),
        }
    }
}

/// tonic-prost's decoder with its failures answered as `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct TenantryDecoder<U> {
    inner: ProstDecoder<U>,
}

impl<U: Message + Default> Decoder for TenantryDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner
            .decode(buf)
            .map_err(|_| Status::invalid_argument(UNDECODABLE))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}
