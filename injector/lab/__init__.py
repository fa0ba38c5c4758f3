"""Targets to inject into: throwaway namespaces with traffic (demo, host tests); the netns lab later."""
