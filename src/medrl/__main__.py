from medrl.cli import main

if __name__ == "__main__":  # worker processes (multiprocessing forkserver/spawn) import this module too
    main()
