//! The protobuf codec every MCP service and client uses: prost with small initial
//! buffers. Each open RPC holds an encode and a decode buffer; tonic's default of
//! 8 KiB each makes a fleet of idle heartbeat streams cost 16 KiB per node for
//! buffers that carry ~100-byte messages. Buffers still grow for large messages.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial buffer: fits a heartbeat (about 140 bytes with a state digest); grows
/// on demand.
const BUFFER_SIZE: usize = 256;
/// tonic's default: how much is encoded before yielding.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// Prost encoding with small initial buffers.
#[derive(Debug, Clone)]
pub struct SmallCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for SmallCodec<T, U> {
    fn default() -> Self {
        SmallCodec { _pd: PhantomData }
    }
}

impl<T, U> Codec for SmallCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
    }
}
