// Compile-time checks of the typed API (`npm run typecheck`): what must
// type-check does, and what must not is marked @ts-expect-error.
import {
  Client,
  connect,
  ErrorCodes,
  RtmClient,
  RtmError,
  type ConnectionState,
  type ResyncReason,
  type StreamPosition,
  type SubscribeRetryInfo,
} from '@rtm/client';

export async function usage(): Promise<void> {
  const client: Client = await connect('ws://127.0.0.1:7070/', {
    auth: 'user:alice',
    callTimeoutMs: 5000,
    offlineQueue: 100,
    reconnect: { initialMs: 500, maxMs: 30_000, jitter: 'full' },
  });
  const sum: number = await client.call<number>('add', 1, 2);
  const controller = new AbortController();
  const text: string = await client.callWith<string>({ signal: controller.signal, timeoutMs: 100, whenOffline: 'fail' }, 'echo', 'x');
  client.invoke('note', sum, text);
  const off: () => void = client.subscribe<[string, number]>('alert', (message, n) => {
    const m: string = message;
    const k: number = n;
    void [m, k];
  });
  off();
  const undo: () => Promise<void> = await client.subscribePush<[number]>('score', ['m1'], (score) => {
    const s: number = score;
    void s;
  });
  await undo();
  await client.subscribePush('room-message', ['room:lobby']);
  const stop = client.on('reconnecting', ({ attempt, delayMs }) => void [attempt + delayMs]);
  stop();
  client.on('close', (info) => void [info.code, info.reason, info.final]);
  client.on('error', (err: RtmError) => void err.code);
  // Positions and recovery: the events, and the position held.
  client.on('resync', (event, tag, reason) => {
    const e: string = event;
    const t: string = tag;
    const r: ResyncReason = reason;
    void [e, t, r];
  });
  client.on('subscribe-retry', (info: SubscribeRetryInfo) => void [info.event, info.tags.length, info.attempt + info.delayMs, info.error.code]);
  const at: StreamPosition | null = client.position('score', 'm1');
  void at?.offset;
  // @ts-expect-error: a resync listener's reason is a string, not a number
  client.on('resync', (_event: string, _tag: string, reason: number) => void reason);
  await connect('ws://127.0.0.1:7070/', { trackPositions: false });
  const state: ConnectionState = client.state;
  void state;
  try {
    await client.call('f');
  } catch (err) {
    if (RtmError.is(err, ErrorCodes.Timeout)) void err.message;
  }
  // @ts-expect-error: handler arguments are checked against the declared tuple
  client.subscribe<[string]>('alert', (n: number) => void n);
  // @ts-expect-error: no such event
  client.on('opened', () => {});
  // @ts-expect-error: whenOffline is 'queue' or 'fail'
  await client.callWith({ whenOffline: 'drop' }, 'f');
  client.close();

  // The drop-in, typed as loosely as the original.
  const rtm = new RtmClient('ws://127.0.0.1:7070/', {
    authenticationData: { token: 't' },
    reconnectDelayMs: 1000,
    onOpen: () => {},
    onClose: () => {},
    onError: (e) => void [e.code, e.data],
    onReconnecting: (attempt: number) => void attempt,
    onAuthenticating: () => {},
    onMessage: (raw: string) => void raw,
    // Extensions: positions and recovery.
    trackPositions: true,
    onResync: (event: string, tag: string, reason: ResyncReason) => void [event, tag, reason],
    onSubscribeRetry: (info) => void [info.attempt, info.delayMs],
  });
  rtm.client.on('resync', (event, tag, reason) => void [event, tag, reason]);
  const n: number = await rtm.CallWait<number>('add', 1, 2);
  await rtm.Call('log', n);
  const unsub: () => boolean = rtm.Subscribe('alert', (...data: any[]) => void data);
  unsub();
  const unsubPush: () => boolean = await rtm.SubscribePush('score', ['m1'], () => {});
  unsubPush();
  // Socket: the last WebSocket, closed or not; undefined only before the first attempt.
  const readyState: number | undefined = rtm.Socket?.readyState;
  void readyState;
  rtm.Close();
}
