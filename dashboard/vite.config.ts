import { defineConfig } from "vitest/config";
import preact from "@preact/preset-vite";

// The server serves dist/index.html at / and dist/assets/* at /assets/.
export default defineConfig({
  plugins: [preact()],
  base: "/",
  build: { outDir: "dist", assetsDir: "assets", emptyOutDir: true, sourcemap: false },
  server: {
    proxy: {
      "/api": process.env.PHONEFLEET_URL ?? "http://127.0.0.1:8080",
      "/socket.io": { target: process.env.PHONEFLEET_URL ?? "http://127.0.0.1:8080", ws: true },
    },
  },
  test: { environment: "node", include: ["src/**/*.test.ts"] },
});
