/**
 * sha256 of a stream of bytes fed in order, computed in a worker thread: the bytes are copied into a
 * ring of shared slots, which the worker hashes while the feeding thread goes on. A copy costs a
 * fifth of what hashing does, so the feeder gets most of its time back on the other core. The two
 * threads meet through atomics on the ring's counters, without a message per slot.
 */
import { CodiError } from './errors.js';

/** slots and their size: enough for the worker to lag a few megabytes behind */
const SLOTS = 8;
const SLOT_BYTES = 1 << 20;
/** control words: slots filled, slots hashed, and the end */
const FILLED = 0;
const HASHED = 1;
const ENDED = 2;
const CONTROL_WORDS = 4;

type WorkerMessage = { kind: 'done'; hex: string } | { kind: 'error'; message: string };

/**
 * The worker's program, passed as source text (an `eval` worker): it may use nothing from this
 * module's scope.
 */
function ringWorkerMain(): void {
  const threads = process.getBuiltinModule('node:worker_threads');
  const { createHash: hashOf } = process.getBuiltinModule('node:crypto');
  const { control, lengths, data, slots, slotBytes } = threads.workerData as {
    control: SharedArrayBuffer;
    lengths: SharedArrayBuffer;
    data: SharedArrayBuffer;
    slots: number;
    slotBytes: number;
  };
  const ctl = new Int32Array(control);
  const len = new Int32Array(lengths);
  const bytes = new Uint8Array(data);
  const hash = hashOf('sha256');
  let hashed = 0;
  for (;;) {
    const filled = Atomics.load(ctl, 0);
    if (filled === hashed) {
      if (Atomics.load(ctl, 2) === 1 && Atomics.load(ctl, 0) === hashed) break;
      Atomics.wait(ctl, 0, filled, 50);
      continue;
    }
    const slot = hashed % slots;
    const at = slot * slotBytes;
    hash.update(bytes.subarray(at, at + (len[slot] ?? 0)));
    hashed++;
    Atomics.store(ctl, 1, hashed);
    Atomics.notify(ctl, 1);
  }
  threads.parentPort?.postMessage({ kind: 'done', hex: hash.digest('hex') });
}

export class HashStream {
  private readonly control = new Int32Array(new SharedArrayBuffer(CONTROL_WORDS * 4));
  private readonly lengths = new Int32Array(new SharedArrayBuffer(SLOTS * 4));
  private readonly data = new Uint8Array(new SharedArrayBuffer(SLOTS * SLOT_BYTES));
  private filled = 0;
  private ended = false;
  private readonly worker: import('node:worker_threads').Worker;
  readonly result: Promise<string>;

  constructor() {
    const { Worker } = process.getBuiltinModule('node:worker_threads');
    this.worker = new Worker(`(${ringWorkerMain.toString()})()`, {
      eval: true,
      workerData: {
        control: this.control.buffer,
        lengths: this.lengths.buffer,
        data: this.data.buffer,
        slots: SLOTS,
        slotBytes: SLOT_BYTES,
      },
      // the worker holds a hash and views of the shared ring: a small heap keeps the peak RSS down
      resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 2 },
    });
    this.result = new Promise<string>((resolve, reject) => {
      this.worker.on('message', (m: WorkerMessage) => {
        if (m.kind === 'done') resolve(m.hex);
        else reject(new CodiError('INTERNAL', `hash worker failed: ${m.message}`));
        void this.worker.terminate();
      });
      this.worker.on('error', (e) => {
        reject(new CodiError('INTERNAL', `hash worker failed: ${e.message}`, { cause: e }));
      });
      this.worker.on('exit', (code) => {
        reject(new CodiError('INTERNAL', `hash worker exited (${code}) before finishing`));
      });
    });
    this.result.catch(() => undefined);
  }

  /** Copies `bytes` into the ring, waiting for a free slot when the worker lags a whole ring behind. */
  update(bytes: Uint8Array): void {
    if (this.ended) throw new CodiError('INTERNAL', 'bytes fed to a finished hash');
    for (let at = 0; at < bytes.length; at += SLOT_BYTES) {
      const part = bytes.subarray(at, Math.min(bytes.length, at + SLOT_BYTES));
      while (this.filled - Atomics.load(this.control, HASHED) >= SLOTS) {
        Atomics.wait(this.control, HASHED, Atomics.load(this.control, HASHED), 50);
      }
      const slot = this.filled % SLOTS;
      this.data.set(part, slot * SLOT_BYTES);
      this.lengths[slot] = part.length;
      this.filled++;
      Atomics.store(this.control, FILLED, this.filled);
      Atomics.notify(this.control, FILLED);
    }
  }

  /** No more bytes: `result` resolves once the worker has hashed the last slot. */
  end(): Promise<string> {
    this.ended = true;
    Atomics.store(this.control, ENDED, 1);
    Atomics.notify(this.control, FILLED);
    return this.result;
  }

  cancel(): void {
    this.ended = true;
    void this.worker.terminate();
  }
}
