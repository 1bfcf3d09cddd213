/**
 * A typed client for credits-service: openapi-fetch over the types openapi-typescript generates
 * from the service's OpenAPI document (src/schema.d.ts), with the service's key, its
 * Idempotency-Key and its error shape.
 */
import createClient, { type Client, type ClientOptions } from "openapi-fetch";
import type { components, paths } from "./schema.js";

export type { components, operations, paths } from "./schema.js";

/** The service's one error shape, with whatever an answer adds beside it (a 402's limit, say). */
export type ErrorBody = components["schemas"]["Error"] & { [name: string]: unknown };

/** An answer of the service other than 2xx. */
export class CreditsError extends Error {
  override readonly name = "CreditsError";

  constructor(
    readonly status: number,
    /** The error shape; undefined when the answer was not the service's (a proxy's page, say). */
    readonly body: ErrorBody | undefined,
    /** The whole answer, for its headers (Retry-After on a 429). */
    readonly response: Response,
  ) {
    super(body?.error ?? `${status} ${response.statusText}`);
  }

  /** What went wrong, in the service's words. */
  get error(): string {
    return this.message;
  }

  /** A validation error's messages by field name. */
  get fields(): ErrorBody["fields"] {
    return this.body?.fields;
  }

  static async from(response: Response): Promise<CreditsError> {
    let body: unknown;
    try {
      body = JSON.parse(await response.text());
    } catch {
      body = undefined;
    }
    return new CreditsError(response.status, isErrorBody(body) ? body : undefined, response);
  }
}

function isErrorBody(body: unknown): body is ErrorBody {
  return typeof body === "object" && body !== null && typeof (body as ErrorBody).error === "string";
}

export interface CreditsClientOptions extends ClientOptions {
  /** Where the service answers, e.g. https://credits.example.com. */
  baseUrl: string;
  /** An API key: write or read for the admin API, service for the platform's. */
  key: string;
  /**
   * Give each write that has no Idempotency-Key one of its own (crypto.randomUUID()), so that a
   * retry of the same request (by a retrying `fetch`) is answered once, not done twice.
   */
  autoIdempotencyKey?: boolean;
}

export type CreditsClient = Client<paths>;

const IDEMPOTENCY_KEY = "Idempotency-Key";
const WRITES = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/**
 * openapi-fetch's client for the service's paths. An Idempotency-Key given as a call's header
 * parameter is sent as is. Every answer other than 2xx throws a CreditsError, so a result's
 * `error` is never set.
 */
export function createCreditsClient({ key, autoIdempotencyKey = false, ...options }: CreditsClientOptions): CreditsClient {
  const client = createClient<paths>(options);
  client.use({
    onRequest({ request }) {
      request.headers.set("Authorization", `Bearer ${key}`);
      if (autoIdempotencyKey && WRITES.has(request.method) && !request.headers.has(IDEMPOTENCY_KEY)) {
        request.headers.set(IDEMPOTENCY_KEY, crypto.randomUUID());
      }
      return request;
    },
    async onResponse({ response }) {
      if (!response.ok) {
        throw await CreditsError.from(response);
      }
    },
  });
  return client;
}
