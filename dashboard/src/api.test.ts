import { describe, expect, it } from "vitest";
import { Api, roleAtLeast } from "./api";

describe("roles", () => {
  it("orders viewer < operator < admin, each including the one before", () => {
    expect(roleAtLeast("viewer", "viewer")).toBe(true);
    expect(roleAtLeast("viewer", "operator")).toBe(false);
    expect(roleAtLeast("operator", "viewer")).toBe(true);
    expect(roleAtLeast("operator", "admin")).toBe(false);
    expect(roleAtLeast("admin", "operator")).toBe(true);
  });

  it("hides what the signed-in role cannot do", () => {
    const api = new Api({ name: "vera", role: "viewer", csrf_token: "x" });
    expect(api.can("viewer")).toBe(true);
    expect(api.can("operator")).toBe(false);
    expect(new Api({ name: "ann", role: "admin" }).can("admin")).toBe(true);
  });
});
