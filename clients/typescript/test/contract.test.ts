// The client against a live service: CREDITS_URL and a write, a service and a read key of it.
// Every test makes clients of its own, with ids of this run, and deletes them at the end, so
// the test runs against a deployed service as often as wanted.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, test } from "node:test";
import { type components, CreditsError, createCreditsClient } from "../src/index.js";

function setting(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: the contract test needs CREDITS_URL, CREDITS_WRITE_KEY, ` +
      "CREDITS_SERVICE_KEY and CREDITS_READ_KEY");
  }
  return value;
}

const baseUrl = setting("CREDITS_URL");
const admin = createCreditsClient({ baseUrl, key: setting("CREDITS_WRITE_KEY") });
const platform = createCreditsClient({ baseUrl, key: setting("CREDITS_SERVICE_KEY") });
const reader = createCreditsClient({ baseUrl, key: setting("CREDITS_READ_KEY") });

const created: string[] = [];

after(async () => {
  for (const clientId of created) {
    await admin.DELETE("/api/admin/clients/{client_id}", { params: { path: { client_id: clientId } } });
  }
});

async function newClient(quota: components["schemas"]["QuotaUpdate"] = { plan: "free" }): Promise<string> {
  const id = `ts-contract-${randomUUID()}`;
  const { data: client } = await admin.POST("/api/admin/clients", { body: { id, name: "TypeScript contract test" } });
  assert.equal(client?.id, id);
  created.push(id);
  await admin.PUT("/api/admin/clients/{client_id}/quota", { params: { path: { client_id: id } }, body: quota });
  return id;
}

async function quotaStatus(clientId: string) {
  const { data } = await platform.GET("/api/clients/{client_id}/quota-status", { params: { path: { client_id: clientId } } });
  assert.ok(data);
  return data;
}

async function rejectsWith(call: Promise<unknown>, status: number): Promise<CreditsError> {
  const error = await call.then(() => assert.fail(`answered 2xx, not ${status}`), (error: unknown) => error);
  assert.ok(error instanceof CreditsError, String(error));
  assert.equal(error.status, status, error.message);
  return error;
}

test("an admin creates a client and changes its plan", async () => {
  const clientId = await newClient();
  const path = { client_id: clientId };

  const { data: quota } = await admin.PUT("/api/admin/clients/{client_id}/quota", {
    params: { path }, body: { plan: "pro", reason: "Upgraded" },
  });
  assert.equal(quota?.plan, "pro");
  assert.equal(quota.clientId, clientId);

  const { data: client } = await reader.GET("/api/admin/clients/{client_id}", { params: { path } });
  assert.equal(client?.plan, "pro");
});

test("a permanent grant raises the limit, a month grant adds to this month until voided", async () => {
  const clientId = await newClient({ monthlyGenerationLimit: 10 });
  const path = { client_id: clientId };

  const { data: permanent } = await admin.POST("/api/admin/clients/{client_id}/credits", {
    params: { path }, body: { action: "grant", amount: 5, scope: "permanent", reason: "Goodwill" },
  });
  assert.equal(permanent?.scope, "permanent");
  assert.deepEqual([permanent.previousLimit, permanent.newLimit], [10, 15]);

  const { data: month } = await admin.POST("/api/admin/clients/{client_id}/credits", {
    params: { path }, body: { action: "grant", amount: 3, scope: "month", reason: "Campaign" },
  });
  assert.equal(month?.scope, "month");
  assert.match(month.month ?? "", /^\d{4}-\d{2}$/);
  assert.ok(month.grantId);
  let status = await quotaStatus(clientId);
  assert.deepEqual([status.baseLimit, status.grantedThisMonth, status.generationsLimit], [15, 3, 18]);

  await admin.POST("/api/admin/clients/{client_id}/credits", {
    params: { path }, body: { action: "void", grantId: month.grantId, reason: "Granted by mistake" },
  });
  status = await quotaStatus(clientId);
  assert.deepEqual([status.grantedThisMonth, status.generationsLimit], [0, 15]);
});

test("consuming past the limit throws a CreditsError carrying the 402's body", async () => {
  const clientId = await newClient({ monthlyGenerationLimit: 2 });
  const params = { path: { client_id: clientId } };

  const { data: usage } = await platform.POST("/api/clients/{client_id}/usage", { params, body: { count: 2 } });
  assert.deepEqual([usage?.generationCount, usage?.remaining], [2, 0]);

  const refusal = await rejectsWith(platform.POST("/api/clients/{client_id}/usage", { params, body: { count: 1 } }), 402);
  assert.ok(refusal.error);
  assert.deepEqual([refusal.body?.generationCount, refusal.body?.limit, refusal.body?.remaining], [2, 2, 0]);
  assert.equal((await quotaStatus(clientId)).generationsUsed, 2);
});

test("a refused request's CreditsError names the fields at fault, and the key's role", async () => {
  const clientId = await newClient();
  const params = { path: { client_id: clientId } };

  const invalid = await rejectsWith(platform.POST("/api/clients/{client_id}/usage", { params, body: { count: 0 } }), 400);
  assert.ok(invalid.fields?.count, JSON.stringify(invalid.body));

  await rejectsWith(reader.POST("/api/clients/{client_id}/usage", { params, body: { count: 1 } }), 403);
});

test("a retry with the same Idempotency-Key is replayed, not done twice", async () => {
  const clientId = await newClient({ monthlyGenerationLimit: 10 });
  const params = { path: { client_id: clientId }, header: { "Idempotency-Key": randomUUID() } };

  const first = await platform.POST("/api/clients/{client_id}/usage", { params, body: { count: 1 } });
  const retry = await platform.POST("/api/clients/{client_id}/usage", { params, body: { count: 1 } });
  assert.equal(first.response.headers.get("Idempotent-Replayed"), null);
  assert.equal(retry.response.headers.get("Idempotent-Replayed"), "true");
  assert.deepEqual(retry.data, first.data);
  assert.equal((await quotaStatus(clientId)).generationsUsed, 1);
});

test("with autoIdempotencyKey, a write that fetch sends twice is done once", async () => {
  const clientId = await newClient({ monthlyGenerationLimit: 10 });
  // As a retrying fetch would, after an answer lost on the way back.
  const sendingTwice = async (request: Request) => {
    await (await fetch(request.clone())).body?.cancel();
    return fetch(request);
  };
  const retrying = createCreditsClient({
    baseUrl, key: setting("CREDITS_SERVICE_KEY"), autoIdempotencyKey: true, fetch: sendingTwice,
  });

  const { response } = await retrying.POST("/api/clients/{client_id}/usage", {
    params: { path: { client_id: clientId } }, body: { count: 1 },
  });
  assert.equal(response.headers.get("Idempotent-Replayed"), "true");
  assert.equal((await quotaStatus(clientId)).generationsUsed, 1);
});

test("the platform and readers see the quota status", async () => {
  const clientId = await newClient({ plan: "starter" });
  const status = await quotaStatus(clientId);
  assert.equal(status.plan, "starter");
  assert.equal(status.generationsUsed, 0);
  assert.match(status.month ?? "", /^\d{4}-\d{2}$/);

  const { data: read } = await reader.GET("/api/clients/{client_id}/quota-status", { params: { path: { client_id: clientId } } });
  assert.deepEqual(read, status);
});

test("the audit search finds a client's changes, by action too", async () => {
  const clientId = await newClient({ plan: "starter" });
  await admin.POST("/api/admin/clients/{client_id}/credits", {
    params: { path: { client_id: clientId } }, body: { action: "grant", amount: 2 },
  });

  const { data: all } = await reader.GET("/api/admin/audit-log", { params: { query: { clientId } } });
  assert.deepEqual(all?.items?.map((entry) => entry.action), ["credit_grant", "plan_change"]);

  const { data: grants } = await reader.GET("/api/admin/audit-log", {
    params: { query: { clientId, action: ["credit_grant"], limit: 1 } },
  });
  assert.equal(grants?.items?.length, 1);
  assert.equal(grants.items[0]?.clientId, clientId);
  assert.equal(grants.nextBefore, null);
});

test("a hold reserves generations until captured; the rest is released", async () => {
  const clientId = await newClient({ monthlyGenerationLimit: 5 });
  const path = { client_id: clientId };

  const { data: hold } = await platform.POST("/api/clients/{client_id}/holds", {
    params: { path }, body: { count: 3, reference: "job-1" },
  });
  assert.ok(hold?.holdId);
  assert.deepEqual([hold.generationsHeld, hold.generationsRemaining], [3, 2]);

  const { data: captured } = await platform.POST("/api/clients/{client_id}/holds/{hold_id}/capture", {
    params: { path: { ...path, hold_id: hold.holdId } }, body: { count: 2 },
  });
  assert.deepEqual([captured?.capturedCount, captured?.releasedCount, captured?.generationCount], [2, 1, 2]);
  const status = await quotaStatus(clientId);
  assert.deepEqual([status.generationsUsed, status.generationsHeld], [2, 0]);
});

test("storage deltas count against the storage quota", async () => {
  const clientId = await newClient({ storageQuotaMb: 1 });
  const params = { path: { client_id: clientId } };

  const { data: stored } = await platform.POST("/api/clients/{client_id}/storage", {
    params, body: { deltaBytes: 600_000, reference: "upload-1" },
  });
  assert.deepEqual([stored?.usedBytes, stored?.remainingBytes], [600_000, 1_048_576 - 600_000]);

  const refusal = await rejectsWith(platform.POST("/api/clients/{client_id}/storage", {
    params, body: { deltaBytes: 600_000 },
  }), 402);
  assert.equal(refusal.body?.usedBytes, 600_000);

  const { data: freed } = await platform.POST("/api/clients/{client_id}/storage", { params, body: { deltaBytes: -100_000 } });
  assert.equal(freed?.usedBytes, 500_000);
  assert.equal((await quotaStatus(clientId)).storageUsedBytes, 500_000);
});
