/**
 * The browser bundle's entry: one `<script src="rtm-client.js">` defines the
 * global `RTM` (`RTM.connect`, `RTM.Client`, `RTM.RtmClient`, `RTM.RtmError`,
 * `RTM.ErrorCodes`). No dependency: browsers have WebSocket.
 */
import { Client, connect } from './client.js';
import { RtmClient, RTMMessageResponse } from './compat.js';
import { ErrorCodes, RtmError } from './errors.js';

export const version = '1.0.0';
export { Client, connect, ErrorCodes, RtmClient, RtmError, RTMMessageResponse };
